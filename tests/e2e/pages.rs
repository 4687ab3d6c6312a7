//! The facade's tools and pages in Debian's Chromium, with the network to anything but the
//! facade cut off (tests/node/pages.mjs): Swagger UI's "Try it out" logs in, GraphiQL runs from
//! the facade's own assets and sends the CSRF token, the account page shows and revokes
//! sessions. Screenshots land in `target/e2e-screenshots/`.

use e2e::*;

/// Runs one scenario of tests/node/pages.mjs against `stack` as `username`; its report.
async fn drive(scenario: &str, stack: &Stack, username: &str) -> serde_json::Value {
    let node = std::env::var("E2E_NODE").unwrap_or_else(|_| "node".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/node/pages.mjs");
    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/e2e-screenshots");
    std::fs::create_dir_all(shots).unwrap();
    let base = format!("http://{}", stack.facade.addr);
    let (scenario, username) = (scenario.to_owned(), username.to_owned());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&node).args([script, &scenario, &base, &username, PASSWORD, shots]).output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|error| panic!("cannot run node: {error} (.ci/tools installs playwright-core and chromium)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "pages.mjs failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
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
    let user = sign_up(&mut stack.identity.users(), "gwen").await;
    let report = drive("graphiql", &stack, "gwen").await;
    assert_eq!(report["blocked"], serde_json::json!([]), "GraphiQL reached outside the facade");
    // The mutation GraphiQL ran is stored.
    let access = log_in(&mut stack.identity.auth(), "gwen").await.access_token;
    let request = bearer(identity_proto::pb::GetUserRequest { id: user.id.clone() }, &access);
    let changed = stack.identity.users().get_user(request).await.unwrap().into_inner().user.unwrap();
    assert_eq!(changed.email, report["email"].as_str().unwrap());
}

#[tokio::test]
async fn the_account_page_shows_devices_and_revokes_one_session_then_every_other() {
    let stack = Stack::start().await;
    sign_up(&mut stack.identity.users(), "ada").await;
    let report = drive("account", &stack, "ada").await;
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{report}");
    // What the page left is what the service holds: one live session.
    let login = log_in(&mut stack.identity.auth(), "ada").await;
    let request = bearer(identity_proto::pb::ListSessionsRequest::default(), &login.access_token);
    let listed = stack.identity.auth().list_sessions(request).await.unwrap().into_inner();
    assert_eq!(listed.sessions.len(), 2, "the page's session and this one");
}
