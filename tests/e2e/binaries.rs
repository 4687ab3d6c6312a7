//! The `identity-service` binary as an operator meets it: bad configuration, and grpcurl with
//! no .proto files at hand.

use std::process::{Command, Stdio};

use e2e::*;

/// Runs the binary with only `env` set; returns (exit code, stderr).
fn run_with(env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(binary("identity-service"))
        .env_clear()
        // Never the default port: another service may hold it.
        .env("IDENTITY_GRPC_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).trim().to_owned())
}

#[test]
fn bad_configuration_exits_non_zero_with_one_line_naming_the_setting() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("IDENTITY_JWT_ALG", "none")], "IDENTITY_JWT_ALG"),
        (&[("IDENTITY_JWT_ALG", "HS256")], "IDENTITY_JWT_SECRET"),
        (&[("IDENTITY_DATABASE_URL", "mysql://localhost/x")], "IDENTITY_DATABASE_URL"),
        (&[("IDENTITY_ACCESS_TTL", "forever")], "IDENTITY_ACCESS_TTL"),
        (&[("IDENTITY_GRPC_ADDR", busy_addr.as_str())], "IDENTITY_GRPC_ADDR"),
        (
            &[
                ("IDENTITY_DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing"),
                ("IDENTITY_DATABASE_TIMEOUT", "1s"),
                ("IDENTITY_GRPC_ADDR", "127.0.0.1:0"),
            ],
            "IDENTITY_DATABASE_URL",
        ),
    ];
    for (env, setting) in cases {
        let (code, stderr) = run_with(env);
        assert_ne!(code, 0, "{env:?} started");
        assert_eq!(stderr.lines().count(), 1, "{env:?}: {stderr}");
        assert!(stderr.contains(setting), "{env:?}: {stderr}");
    }
    drop(busy);
}

#[test]
fn help_documents_every_setting() {
    let output = Command::new(binary("identity-service")).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for setting in [
        "IDENTITY_DATABASE_URL",
        "IDENTITY_GRPC_ADDR",
        "IDENTITY_ISSUER",
        "IDENTITY_AUDIENCE",
        "IDENTITY_JWT_ALG",
        "IDENTITY_JWT_SECRET",
        "IDENTITY_ACCESS_TTL",
        "IDENTITY_REFRESH_TTL",
        "IDENTITY_SESSION_IDLE_TTL",
        "IDENTITY_REFRESH_REUSE_GRACE",
        "IDENTITY_BOOTSTRAP_MANAGER",
        "LOG_FORMAT",
    ] {
        assert!(help.contains(setting), "--help does not mention {setting}");
    }
}

fn grpcurl(args: &[&str]) -> String {
    let program = std::env::var("E2E_GRPCURL").unwrap_or_else(|_| "grpcurl".into());
    let output = Command::new(&program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error} (set E2E_GRPCURL; .ci/test installs grpcurl)"));
    assert!(output.status.success(), "grpcurl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_lists_and_describes_the_services_by_reflection() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    let addr = service.addr.to_string();
    let listed = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || grpcurl(&["-plaintext", &addr, "list"])
    })
    .await
    .unwrap();
    for name in ["identity.v1.AuthService", "identity.v1.UserService", "grpc.health.v1.Health"] {
        assert!(listed.contains(name), "{listed}");
    }
    let described = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || grpcurl(&["-plaintext", &addr, "describe", "identity.v1.AuthService"])
    })
    .await
    .unwrap();
    assert!(described.contains("rpc WatchSession") && described.contains("stream"), "{described}");
    // A message that imports google.protobuf.Struct resolves too.
    let principal =
        tokio::task::spawn_blocking(move || grpcurl(&["-plaintext", &addr, "describe", "identity.v1.Principal"]))
            .await
            .unwrap();
    assert!(principal.contains("google.protobuf.Struct"), "{principal}");
}
