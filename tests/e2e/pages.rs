//! The facade's tools and pages in Debian's Chromium, with the network to anything but the
//! facade cut off (tests/node/pages.mjs, tests/node/accounts.mjs): Swagger UI's "Try it out"
//! logs in, GraphiQL runs from the facade's own assets and sends the CSRF token, the account
//! page shows and revokes sessions, and a forgotten password is reset through the link mailed
//! to a real SMTP server. Screenshots land in `target/e2e-screenshots/`.

use e2e::*;

/// Runs one scenario of tests/node/pages.mjs against `stack` as `username`; its report.
async fn drive(scenario: &str, stack: &Stack, username: &str) -> serde_json::Value {
    let base = format!("http://{}", stack.facade.addr);
    node("pages.mjs", &[scenario, &base, username, PASSWORD]).await
}

/// Runs `tests/node/{script}` with `args` and the screenshot directory last; its report (the
/// last line of its output), which must say `ok`.
async fn node(script: &str, args: &[&str]) -> serde_json::Value {
    let node = std::env::var("E2E_NODE").unwrap_or_else(|_| "node".into());
    let script = format!("{}/node/{script}", env!("CARGO_MANIFEST_DIR"));
    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/e2e-screenshots");
    std::fs::create_dir_all(shots).unwrap();
    let mut args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    args.push(shots.to_owned());
    let output = tokio::task::spawn_blocking(move || std::process::Command::new(&node).arg(script).args(args).output())
        .await
        .unwrap()
        .unwrap_or_else(|error| panic!("cannot run node: {error} (.ci/tools installs playwright-core and chromium)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "node failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    report
}

#[tokio::test]
async fn swagger_ui_try_it_out_logs_in_with_the_csrf_token_and_reads_me() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "sven").await;
    let report = drive("swagger", &stack, "sven").await;
    assert_eq!(report["me"], "sven");
    assert_eq!(report["blocked"], serde_json::json!([]), "Swagger UI reached outside the facade");
}

#[tokio::test]
async fn graphiql_runs_offline_and_a_logged_in_browser_runs_mutations() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "gwen").await;
    let report = drive("graphiql", &stack, "gwen").await;
    assert_eq!(report["blocked"], serde_json::json!([]), "GraphiQL reached outside the facade");
    // The mutation GraphiQL ran reached the service: the link to the new address is written.
    let email = report["email"].as_str().unwrap();
    let dir = stack.db.outbox_dir();
    eventually(std::time::Duration::from_secs(30), || {
        let dir = dir.clone();
        async move {
            outbox(&dir).into_iter().find(|mail| mail.subject == "Confirm your new email address" && mail.is_to(email))
        }
    })
    .await;
}

#[tokio::test]
async fn the_account_page_shows_devices_and_revokes_one_session_then_every_other() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "ada").await;
    let report = drive("account", &stack, "ada").await;
    assert_eq!(report["blocked"], serde_json::json!([]), "the account page reached outside the facade");
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{report}");
    // What the page left is what the service holds: one live session.
    let login = log_in(&mut stack.identity.auth(), "ada").await;
    let request = bearer(identity_proto::pb::ListSessionsRequest::default(), &login.access_token);
    let listed = stack.identity.auth().list_sessions(request).await.unwrap().into_inner();
    assert_eq!(listed.sessions.len(), 2, "the page's session and this one");
}

#[tokio::test]
async fn a_forgotten_password_is_reset_from_the_demo_page_through_the_mailed_link() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let config = mail_config(&db, &smtp);
    let stack = Stack::start_with(db, config, |_| {}).await;
    sign_up(&mut stack.identity.users(), "rex").await;
    let base = stack.facade.base();

    let report = node("accounts.mjs", &["forgot", &base, "rex@example.com"]).await;
    assert_eq!(report["blocked"], serde_json::json!([]), "the demo page reached outside the facade");
    let mail =
        smtp.wait_for_subject("rex@example.com", "Reset your password", std::time::Duration::from_secs(30)).await;
    let link = mail.link(&format!("{base}/account/reset-password?"));

    let new_password = "a password from the browser";
    let report = node("accounts.mjs", &["reset", &base, &link, "rex", new_password]).await;
    assert_eq!(report["whoami"], "rex", "{report}");
    assert_eq!(report["blocked"], serde_json::json!([]), "the reset page reached outside the facade");
    // What the browser did is what the service holds.
    let mut auth = stack.identity.auth();
    let old = auth.login(identity_proto::pb::LoginRequest { username: "rex".into(), password: PASSWORD.into() }).await;
    assert_eq!(old.unwrap_err().code(), tonic::Code::Unauthenticated);
    auth.login(identity_proto::pb::LoginRequest { username: "rex".into(), password: new_password.into() })
        .await
        .unwrap();
}
