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
    let cases: [(&[(&str, &str)], &str); 7] = [
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
                ("IDENTITY_KEY_ENCRYPTION_KEY", TEST_KEK),
            ],
            "IDENTITY_DATABASE_URL",
        ),
        // PostgreSQL replicas must share a key-encryption key: none is generated for them.
        (&[("IDENTITY_DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing")], "IDENTITY_KEY_ENCRYPTION_KEY"),
    ];
    for (env, setting) in cases {
        let (code, stderr) = run_with(env);
        assert_ne!(code, 0, "{env:?} started");
        assert_eq!(stderr.lines().count(), 1, "{env:?}: {stderr}");
        assert!(stderr.contains(setting), "{env:?}: {stderr}");
    }
    drop(busy);
}

/// Runs `program` with only `env` in a fresh directory; returns its exit code and stderr, and
/// whether anything accepted a TCP connection at one of `watched` while it ran.
fn run_watching(program: &str, env: &[(&str, &str)], watched: &[std::net::SocketAddr]) -> (i32, String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary(program))
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut accepted = false;
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "{program} {env:?} did not exit within 60 s");
        for addr in watched {
            accepted |= std::net::TcpStream::connect_timeout(addr, std::time::Duration::from_millis(50)).is_ok();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    (output.status.code().unwrap_or(-1), stderr, accepted)
}

#[test]
fn the_stack_fails_to_start_exactly_as_the_identity_service_does_and_listens_on_nothing_meanwhile() {
    let cases: [(&[(&str, &str)], i32); 4] = [
        (
            &[
                ("IDENTITY_DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing"),
                ("IDENTITY_DATABASE_TIMEOUT", "1s"),
                ("IDENTITY_KEY_ENCRYPTION_KEY", TEST_KEK),
            ],
            1,
        ),
        (&[("IDENTITY_DATABASE_URL", "sqlite:///proc/no-such-dir/identity.db?mode=rwc")], 1),
        (&[("IDENTITY_DATABASE_URL", "sqlite://missing.db?mode=rw")], 1),
        (&[("IDENTITY_BOOTSTRAP_MANAGER", "root:short")], 2),
    ];
    for (env, expected) in cases {
        let (grpc, http) = (free_address(), free_address());
        let (grpc_text, http_text) = (grpc.to_string(), http.to_string());
        let mut env = env.to_vec();
        env.extend([("IDENTITY_GRPC_ADDR", grpc_text.as_str()), ("FACADE_HTTP_ADDR", http_text.as_str())]);
        let (service_code, service_error, _) = run_watching("identity-service", &env, &[]);
        let (stack_code, stack_error, accepted) = run_watching("identity-stack", &env, &[grpc, http]);
        assert_eq!(service_code, expected, "identity-service {env:?}: {service_error}");
        assert_eq!(stack_code, expected, "identity-stack {env:?}: {stack_error}");
        assert_eq!(stack_error.lines().count(), 1, "{env:?}: {stack_error}");
        assert_eq!(
            stack_error.strip_prefix("identity-stack: "),
            service_error.strip_prefix("identity-service: "),
            "{env:?}"
        );
        assert!(!accepted, "identity-stack {env:?} accepted connections before failing");
    }
    let (_, error, _) = run_watching("identity-service", &[("IDENTITY_BOOTSTRAP_MANAGER", "root:short")], &[]);
    assert_eq!(error.matches("IDENTITY_BOOTSTRAP_MANAGER").count(), 1, "{error}");
}

#[test]
fn nonsense_settings_exit_2_naming_the_setting() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 9] = [
        (
            "identity-service",
            &[("IDENTITY_JWT_ALG", "HS256"), ("IDENTITY_JWT_SECRET", "0123456789abcdef0123456789abcde")],
            "IDENTITY_JWT_SECRET: must be at least 32 bytes",
        ),
        ("identity-service", &[("IDENTITY_DATABASE_MAX_CONNECTIONS", "0")], "IDENTITY_DATABASE_MAX_CONNECTIONS"),
        ("identity-service", &[("IDENTITY_LOGIN_MAX_FAILURES", "0")], "IDENTITY_LOGIN_MAX_FAILURES"),
        ("identity-service", &[("IDENTITY_SESSION_CACHE_TTL", "0s")], "IDENTITY_SESSION_CACHE_TTL"),
        ("identity-service", &[("IDENTITY_DATABASE_TIMEOUT", "0s")], "IDENTITY_DATABASE_TIMEOUT"),
        (
            "identity-service",
            &[("IDENTITY_SMTP_URL", "smtp://127.0.0.1:2525"), ("IDENTITY_SMTP_CA", "/etc/hostname")],
            "IDENTITY_SMTP_CA: needs an SMTP URL that speaks TLS",
        ),
        (
            "identity-service",
            &[("IDENTITY_SMTP_URL", "smtps://127.0.0.1:2525"), ("IDENTITY_SMTP_CA", "/etc/hostname")],
            "IDENTITY_SMTP_CA: /etc/hostname: holds no PEM certificate",
        ),
        ("graphql-facade", &[("FACADE_WS_PING_INTERVAL", "0s")], "FACADE_WS_PING_INTERVAL"),
        ("identity-stack", &[("FACADE_MAX_BODY_BYTES", "0")], "FACADE_MAX_BODY_BYTES"),
    ];
    for (program, env, expected) in cases {
        let mut env = env.to_vec();
        env.extend([("IDENTITY_GRPC_ADDR", "127.0.0.1:0"), ("FACADE_HTTP_ADDR", "127.0.0.1:0")]);
        let (code, stderr, _) = run_watching(program, &env, &[]);
        assert_eq!(code, 2, "{program} {env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{program} {env:?}: {stderr}");
        assert!(stderr.contains(expected), "{program} {env:?}: {stderr}");
    }
}

/// The settings `program --help` names with `prefix`.
fn settings_in_help(program: &str, prefix: &str) -> Vec<String> {
    let output = Command::new(binary(program)).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut settings: Vec<String> = help
        .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|word| word.starts_with(prefix) && word.len() > prefix.len())
        .map(str::to_owned)
        .collect();
    settings.sort();
    settings.dedup();
    settings
}

#[test]
fn help_and_the_docs_name_every_setting() {
    let docs = |pages: &[&str]| -> String {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        pages.iter().map(|page| std::fs::read_to_string(root.join(page)).unwrap()).collect()
    };
    for (program, prefix, pages, at_least) in [
        ("identity-service", "IDENTITY_", &["identity-service.md"][..], 30),
        ("graphql-facade", "FACADE_", &["graphql.md", "http.md"][..], 20),
    ] {
        let settings = settings_in_help(program, prefix);
        assert!(settings.len() >= at_least, "{program} --help names only {settings:?}");
        let documented = docs(pages);
        for setting in &settings {
            assert!(
                documented.contains(&format!("`{setting}`")),
                "{setting} ({program} --help) is not in docs/{pages:?}"
            );
        }
    }
    let help = Command::new(binary("identity-service")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("backup") && help.contains("LOG_FORMAT"), "{help}");
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
    // A message that uses another file's message and a well-known type resolves too.
    let principal =
        tokio::task::spawn_blocking(move || grpcurl(&["-plaintext", &addr, "describe", "identity.v1.Principal"]))
            .await
            .unwrap();
    assert!(principal.contains("identity.v1.Claims"), "{principal}");
    assert!(principal.contains("google.protobuf.Timestamp"), "{principal}");
}

/// Reads JSON log lines until each of `messages` has said where it listens, in any order.
fn address_of(entry: &serde_json::Value) -> String {
    let address = entry["fields"]["address"].as_str().unwrap_or_default();
    address.trim_start_matches("Some(").trim_end_matches(')').to_owned()
}

/// The first log entry with each of `messages`.
fn listening_entries(lines: &mut impl Iterator<Item = String>, messages: [&str; 2]) -> [serde_json::Value; 2] {
    let mut found: [Option<serde_json::Value>; 2] = [None, None];
    for line in lines.by_ref() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if let Some(index) = messages.iter().position(|message| entry["fields"]["message"] == *message) {
            found[index] = Some(entry);
        }
        if let [Some(first), Some(second)] = &found {
            return [first.clone(), second.clone()];
        }
    }
    panic!("the stack never said where it listens: {found:?}");
}

/// Starts `identity-stack` in `dir` with `env`; returns the child and its [gRPC, HTTP]
/// addresses. The child is killed after a minute whatever happens.
pub fn start_stack(dir: &std::path::Path, env: &[(&str, &str)]) -> (std::process::Child, [String; 2]) {
    let (child, entries) = start_stack_logging(dir, env);
    (child, entries.map(|entry| address_of(&entry)))
}

/// `start_stack`, returning the log entries where the two halves said they listen.
fn start_stack_logging(dir: &std::path::Path, env: &[(&str, &str)]) -> (std::process::Child, [serde_json::Value; 2]) {
    use std::io::{BufRead, BufReader};

    let mut child = Command::new(binary("identity-stack"))
        .env_clear()
        .env("IDENTITY_GRPC_ADDR", "127.0.0.1:0")
        .env("FACADE_HTTP_ADDR", "127.0.0.1:0")
        .env("IDENTITY_JWT_ALG", "ES256")
        .env("LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    let entries = listening_entries(&mut lines, ["identity service listening", "graphql facade listening"]);
    std::thread::spawn(move || lines.for_each(drop));
    (child, entries)
}

/// Signs up `username` through the facade at `http` and fetches its discovery document.
pub async fn sign_up_and_discover(http: &str, username: &str) -> (serde_json::Value, serde_json::Value) {
    let client = reqwest::Client::new();
    let query = format!(
        "mutation {{ createUser(username: \"{username}\", password: \"correct horse battery\", email: \"{username}@example.com\") {{ user {{ username }} token }} }}"
    );
    let created =
        json_of(client.post(format!("http://{http}/graphql")).json(&serde_json::json!({ "query": query }))).await;
    let discovery = json_of(client.get(format!("http://{http}/.well-known/openid-configuration"))).await;
    (created, discovery)
}

#[test]
fn the_stack_binary_serves_graphql_through_its_own_identity_service_its_issuer_following_its_port() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let (mut child, entries) = start_stack_logging(dir.path(), &[("TMPDIR", tmp.to_str().unwrap())]);
    let [grpc, http] = entries.clone().map(|entry| address_of(&entry));
    // The facade reaches its identity half over a Unix socket of the stack's own: the socket
    // owner-only, in a directory owner-only.
    let identity_url = entries[1]["fields"]["identity"].as_str().unwrap_or_default().to_owned();
    let socket = std::path::PathBuf::from(identity_url.strip_prefix("unix://").expect(&identity_url));
    assert!(socket.starts_with(&tmp), "{identity_url}");
    let metadata = std::fs::symlink_metadata(&socket).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    let parent = std::fs::metadata(socket.parent().unwrap()).unwrap();
    assert_eq!(parent.permissions().mode() & 0o777, 0o700);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (created, discovery) = runtime.block_on(sign_up_and_discover(&http, "sid"));
    // A graceful stop removes the socket and its directory.
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let stopped = child.wait().unwrap();
    assert!(stopped.success(), "{stopped:?}");
    assert!(!socket.parent().unwrap().exists(), "the socket's directory outlived the stack");
    assert_eq!(created["data"]["createUser"]["user"]["username"], "sid", "{created}");
    assert!(!grpc.is_empty());
    // IDENTITY_ISSUER unset: the issuer is where the facade listens, not port 8080.
    assert_eq!(discovery["issuer"], format!("http://{http}"), "{discovery}");
    assert_eq!(discovery["jwks_uri"], format!("http://{http}/.well-known/jwks.json"), "{discovery}");
    // The default SQLite file was created under ./data of the working directory.
    assert!(dir.path().join("data/identity.db").exists());
}
