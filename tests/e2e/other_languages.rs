//! docs/clients.md stays true: its Python snippet runs against a real identity service (stubs
//! made by grpcio-tools from proto/), and its Rust snippet is the `login_and_authenticate`
//! example, shown verbatim and run here.

use std::path::Path;

use e2e::*;

const DOC: &str = include_str!("../../docs/clients.md");

/// The first fenced block of `language` in docs/clients.md.
fn snippet(language: &str) -> &'static str {
    let fence = format!("```{language}\n");
    let start = DOC.find(&fence).unwrap_or_else(|| panic!("docs/clients.md has no {language} block")) + fence.len();
    let length = DOC[start..].find("```").unwrap();
    &DOC[start..start + length]
}

fn repository() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Runs `program` with `args` and the snippet's settings; its stdout, or a failure.
async fn run(program: std::path::PathBuf, args: Vec<String>, env: Vec<(&'static str, String)>) -> String {
    let output = tokio::process::Command::new(&program).args(&args).envs(env).output().await.unwrap_or_else(|error| {
        panic!("cannot run {}: {error} (.ci/tools installs grpcio-tools into .ci/.venv)", program.display())
    });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{} {args:?}:\n{stdout}\n{}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_and_rust_snippets_of_the_client_docs_log_in_and_authenticate() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "pyra").await;
    let settings = |address: String| {
        vec![
            ("IDENTITY_ADDR", address.clone()),
            ("IDENTITY_URL", format!("http://{address}")),
            ("IDENTITY_USERNAME", "pyra".to_owned()),
            ("IDENTITY_PASSWORD", PASSWORD.to_owned()),
        ]
    };

    // Python: stubs from proto/ by grpcio-tools, then the snippet as written.
    let python = std::path::PathBuf::from(std::env::var("E2E_PYTHON").unwrap_or_else(|_| "python3".into()));
    let stubs = tempfile::tempdir().unwrap();
    let mut protoc =
        vec!["-m".to_owned(), "grpc_tools.protoc".into(), format!("-I{}", repository().join("proto").display())];
    protoc.push(format!("--python_out={}", stubs.path().display()));
    protoc.push(format!("--grpc_python_out={}", stubs.path().display()));
    for file in std::fs::read_dir(repository().join("proto/identity/v1")).unwrap() {
        protoc.push(file.unwrap().path().display().to_string());
    }
    run(python.clone(), protoc, vec![]).await;
    let script = stubs.path().join("login.py");
    std::fs::write(&script, snippet("python")).unwrap();
    let mut env = settings(service.addr.to_string());
    env.push(("PYTHONPATH", stubs.path().display().to_string()));
    let said = run(python, vec![script.display().to_string()], env).await;
    assert_eq!(
        said, "pyra is a user\n1 live session(s)\nrefused: UNAUTHENTICATED\n",
        "the Python snippet said:\n{said}"
    );

    // Rust: the example is what the docs show, and it runs.
    let example = include_str!("../../proto/examples/login_and_authenticate.rs");
    assert_eq!(
        snippet("rust"),
        example,
        "docs/clients.md's Rust block differs from proto/examples/login_and_authenticate.rs"
    );
    let program = binary("examples/login_and_authenticate");
    let said = run(program, vec![], settings(service.addr.to_string())).await;
    // Python's session is alive too: two.
    assert_eq!(said, "pyra is a user\n2 live session(s)\n", "the Rust example said:\n{said}");
}
