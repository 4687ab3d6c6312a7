//! The facade's account routes answering as dj-rest-auth and django-graphql-auth do, over a
//! real SMTP server: an email change asks for the password (REST and GraphQL `password`), a
//! taken name is a 400 naming the field, a sign-up logs in as `/api/login` does unless the
//! address must be verified first, a dead verification key is a 404, the mutations that need a
//! caller say so in their `errors`, and a user's own `updateUser` of email is bad input — each
//! also under a burst of simultaneous requests.

use std::time::Duration;

use e2e::*;
use identity_core::EmailVerification;
use identity_proto::pb;
use serde_json::{Value, json};

use super::email::{
    ARRIVAL, CHANGE, NOTICE, PASSWORD_CHANGE, RESET, VERIFY, burst, drained, email, stack, subjects, verify_key,
};

const REQUEST_EMAIL_CHANGE: &str =
    "mutation($e: String!, $p: String!) { requestEmailChange(newEmail: $e, password: $p) { success errors } }";
const REGISTER: &str = "mutation($email: String!, $username: String!, $p1: String!, $p2: String!) {
    register(email: $email, username: $username, password1: $p1, password2: $p2) { success errors token } }";
const UPDATE_USER: &str =
    "mutation($id: ID!, $input: UpdateUserInput!) { updateUser(id: $id, input: $input) { email verified } }";
const WHOAMI: &str = "{ whoami { username email verified } }";

// === Helpers ===

/// django-graphql-auth's `errors` for a wrong password (`Messages.INVALID_PASSWORD`).
fn invalid_password() -> Value {
    json!({"password": [{"message": "Invalid password.", "code": "invalid_password"}]})
}

/// django-graphql-auth's `errors` without a caller (`login_required`).
fn unauthenticated() -> Value {
    json!({"nonFieldErrors": [{"message": "Unauthenticated.", "code": "unauthenticated"}]})
}

/// A browser that opened one of our pages: it holds the CSRF cookie, and no session.
async fn browser(stack: &Stack) -> Browser {
    let mut browser = Browser::new(&stack.facade);
    let (status, _, _) = browser.get("/api/csrf").await;
    assert_eq!(status, 200);
    browser
}

/// Another tab of `browser`: the same cookies.
fn tab(browser: &Browser) -> Browser {
    Browser {
        http: reqwest::Client::new(),
        base: browser.base.clone(),
        cookies: browser.cookies.clone(),
        set_cookies: Vec::new(),
    }
}

fn sign_up_body(username: &str, address: &str) -> Value {
    json!({"username": username, "email": address, "password1": PASSWORD, "password2": PASSWORD})
}

/// Asks for a password reset of `name` and waits for it and for the outbox to drain: any mail
/// asked for before has arrived by then.
async fn after_a_marker(stack: &Stack, smtp: &SmtpServer, name: &str) {
    let request = pb::RequestPasswordResetRequest { email: email(name) };
    stack.identity.accounts().request_password_reset(request).await.unwrap();
    smtp.wait_for_subject(&email(name), RESET, ARRIVAL).await;
    drained(&stack.db).await;
}

// === An email change asks for the password ===

#[tokio::test(flavor = "multi_thread")]
async fn an_email_change_asks_for_the_password_and_a_burst_of_wrong_ones_mails_nobody() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |_| {}).await;
    sign_up(&mut stack.identity.users(), "ada").await;
    smtp.wait_for_subject(&email("ada"), VERIFY, ARRIVAL).await;
    let mut browser = browser(&stack).await;
    browser.log_in("ada", PASSWORD).await;
    let gql = stack.client();
    let (token, _) = gql.token_auth("ada", PASSWORD).await;
    let new = "ada@new.example.com";

    // REST: the password is part of the body; a wrong one is dj-rest-auth's field list.
    let (status, _, body) = browser.post("/api/email/change/", json!({"email": new}), true).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains(r#""password""#), "names what it expects: {body}");
    let (status, _, body) = browser.post("/api/email/change/", json!({"email": new, "password": ""}), true).await;
    assert_eq!((status, &body["password"]), (400, &json!(["Password must not be empty."])), "{body}");
    let wrong = json!({"email": new, "password": "not her password"});
    let (status, _, body) = browser.post("/api/email/change/", wrong.clone(), true).await;
    assert_eq!((status, &body["password"]), (400, &json!(["Invalid password."])), "{body}");

    // GraphQL: `password` is required; a wrong one is django-graphql-auth's form error.
    let body = gql
        .as_user(&token, r#"mutation { requestEmailChange(newEmail: "x@example.com") { success } }"#, json!({}))
        .await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("password"), "{body}");
    let body = gql.as_user(&token, REQUEST_EMAIL_CHANGE, json!({"e": new, "p": "not her password"})).await;
    assert_eq!(body["data"]["requestEmailChange"], json!({"success": false, "errors": invalid_password()}), "{body}");

    // A stolen session and a stolen token guessing at once: each guess is told it is wrong.
    let answers = burst(10, |i| {
        let (mut tab, gql, token, guess) = (tab(&browser), gql.clone(), token.clone(), format!("guess number {i}"));
        async move {
            if i % 2 == 0 {
                let (status, _, body) =
                    tab.post("/api/email/change/", json!({"email": new, "password": guess}), true).await;
                (status == 400 && body["password"] == json!(["Invalid password."]), body)
            } else {
                let body = gql.as_user(&token, REQUEST_EMAIL_CHANGE, json!({"e": new, "p": guess})).await;
                let refused = json!({"success": false, "errors": invalid_password()});
                (body["data"]["requestEmailChange"] == refused, body)
            }
        }
    })
    .await;
    for (i, (refused, body)) in answers.iter().enumerate() {
        assert!(refused, "guess {i}: {body}");
    }
    after_a_marker(&stack, &smtp, "ada").await;
    assert_eq!(subjects(&smtp, new), Vec::<String>::new(), "a wrong password mailed the new address");
    assert_eq!(subjects(&smtp, &email("ada")), [VERIFY, RESET], "a wrong password mailed the old address");

    // The right password: the link goes to the new address, the notice to the old one.
    let (status, _, body) = browser.post("/api/email/change/", json!({"email": new, "password": PASSWORD}), true).await;
    assert_eq!((status, body), (200, json!({"detail": "Confirmation e-mail sent."})));
    smtp.wait_for_subject(new, CHANGE, ARRIVAL).await;
    smtp.wait_for_subject(&email("ada"), NOTICE, ARRIVAL).await;
}

// === A taken name: dj-rest-auth's 400 ===

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_up_with_a_taken_username_or_address_is_a_400_naming_the_field() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |_| {}).await;
    let mut browser = browser(&stack).await;
    let (status, _, _) = browser.post("/api/registration/", sign_up_body("bob", &email("bob")), true).await;
    assert_eq!(status, 201);

    let mut other = self::browser(&stack).await;
    let (status, _, body) = other.post("/api/registration/", sign_up_body("bob", "bob2@example.com"), true).await;
    assert_eq!((status, &body["username"]), (400, &json!(["A user with that username already exists."])), "{body}");
    assert_eq!(body["email"], Value::Null, "{body}");
    let (status, _, body) = other.post("/api/registration/", sign_up_body("bobby", "BOB@example.com"), true).await;
    let taken = json!(["A user is already registered with this e-mail address."]);
    assert_eq!((status, &body["email"]), (400, &taken), "{body}");
    assert_eq!(body["username"], Value::Null, "{body}");
    assert_eq!(other.set_cookie("sessionid"), None, "a refused sign-up logged someone in");

    // GraphQL answers django-graphql-auth's words.
    let variables = json!({"email": "Bob@Example.com", "username": "bobby", "p1": PASSWORD, "p2": PASSWORD});
    let body = stack.client().anonymous(REGISTER, variables).await;
    assert_eq!(
        body["data"]["register"]["errors"],
        json!({"email": [{"message": "A user with that email already exists.", "code": "unique"}]}),
        "{body}"
    );

    // Ten sign-ups of one name at once: one account, the others told the name is taken.
    let answers = burst(10, |i| {
        let stack = &stack;
        async move {
            let mut browser = self::browser(stack).await;
            browser.post("/api/registration/", sign_up_body("cat", &format!("cat{i}@example.com")), true).await
        }
    })
    .await;
    let winners: Vec<usize> = (0..10).filter(|&i| answers[i].0 == 201).collect();
    assert_eq!(winners.len(), 1, "{answers:#?}");
    for (i, (status, _, body)) in answers.iter().enumerate().filter(|(i, _)| *i != winners[0]) {
        assert_eq!((*status, &body["username"]), (400, &json!(["A user with that username already exists."])), "{i}");
    }
    let winner = format!("cat{}@example.com", winners[0]);
    smtp.wait_for_subject(&winner, VERIFY, ARRIVAL).await;
    drained(&stack.db).await;
    for i in (0..10).filter(|&i| i != winners[0]) {
        assert_eq!(subjects(&smtp, &format!("cat{i}@example.com")), Vec::<String>::new(), "a refused sign-up mailed");
    }
}

// === A sign-up logs in ===

#[tokio::test]
async fn a_sign_up_logs_the_new_user_in_as_api_login_does() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |_| {}).await;
    let base = stack.facade.base();
    let mut browser = browser(&stack).await;
    let csrf = browser.csrf();

    let (status, _, body) = browser.post("/api/registration/", sign_up_body("dan", &email("dan")), true).await;
    assert_eq!((status, &body["detail"], &body["user"]["username"]), (201, &json!("success"), &json!("dan")), "{body}");
    assert_eq!((&body["user"]["email"], &body["user"]["emailVerified"]), (&json!(email("dan")), &json!(false)));
    let session = browser.set_cookie("sessionid").expect("a session cookie").to_owned();
    assert!(session.contains("HttpOnly"), "{session}");
    assert_ne!(browser.csrf(), csrf, "the CSRF token rotates with the login");
    let (status, _, me) = browser.get("/api/me").await;
    assert_eq!((status, &me["username"]), (200, &json!("dan")), "{me}");

    // The same answer as /api/login's.
    let login = self::browser(&stack).await.log_in("dan", PASSWORD).await;
    let keys = |value: &Value| value.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!((keys(&body), keys(&body["user"])), (keys(&login), keys(&login["user"])), "{body} {login}");

    // The verification link went out all the same.
    let key = verify_key(&smtp.wait_for_subject(&email("dan"), VERIFY, ARRIVAL).await, &base);
    let (status, _, _) = browser.post("/api/registration/verify-email/", json!({"key": key}), true).await;
    assert_eq!(status, 200);
    let (_, _, me) = browser.get("/api/me").await;
    assert_eq!(me["emailVerified"], true, "{me}");

    // As a login does, a sign-up from a browser logged in as someone else ends that session.
    let sessionid = browser.cookies["sessionid"].clone();
    let (status, _, body) = browser.post("/api/registration/", sign_up_body("eve", &email("eve")), true).await;
    assert_eq!((status, &body["user"]["username"]), (201, &json!("eve")), "{body}");
    let (_, _, me) = browser.get("/api/me").await;
    assert_eq!(me["username"], "eve", "{me}");
    let refused = stack.identity.auth().authenticate(session_token(&sessionid)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "dan's session outlived the sign-up");
}

#[tokio::test(flavor = "multi_thread")]
async fn under_required_verification_a_sign_up_answers_verification_sent_and_mails_one_link() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |config| config.email_verification = EmailVerification::Required).await;
    let base = stack.facade.base();
    let mut browser = browser(&stack).await;

    let (status, _, body) = browser.post("/api/registration/", sign_up_body("gil", &email("gil")), true).await;
    assert_eq!((status, body), (201, json!({"detail": "Verification e-mail sent."})));
    assert_eq!(browser.set_cookie("sessionid"), None, "logged in before the address was verified");
    let (status, _, _) = browser.get("/api/me").await;
    assert_eq!(status, 401);

    // Ten at once: each its own answer, each one link (the refused login mails none more).
    let answers = burst(10, |i| {
        let stack = &stack;
        async move {
            let mut browser = self::browser(stack).await;
            let name = format!("guy{i}");
            let answer = browser.post("/api/registration/", sign_up_body(&name, &email(&name)), true).await;
            (answer.0, answer.2, browser.set_cookie("sessionid").map(str::to_owned))
        }
    })
    .await;
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer, &(201, json!({"detail": "Verification e-mail sent."}), None), "sign-up {i}");
    }
    smtp.wait_for_subject(&email("gil"), VERIFY, ARRIVAL).await;
    drained(&stack.db).await;
    assert_eq!(subjects(&smtp, &email("gil")), [VERIFY]);
    for i in 0..10 {
        assert_eq!(subjects(&smtp, &email(&format!("guy{i}"))), [VERIFY], "guy{i}");
    }

    // Verified, the new user logs in.
    let key = verify_key(&smtp.wait_for_subject(&email("gil"), VERIFY, ARRIVAL).await, &base);
    let (status, _, _) = browser.post("/api/registration/verify-email/", json!({"key": key}), true).await;
    assert_eq!(status, 200);
    browser.log_in("gil", PASSWORD).await;
}

// === A dead verification key: dj-rest-auth's 404 ===

#[tokio::test(flavor = "multi_thread")]
async fn a_used_replaced_or_unknown_verification_key_is_a_404_and_of_ten_at_once_one_verifies() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |_| {}).await;
    let base = stack.facade.base();
    let mut browser = browser(&stack).await;
    let not_found = json!({"detail": "Not found."});

    let (status, _, body) = browser.post("/api/registration/verify-email/", json!({"key": "no such key"}), true).await;
    assert_eq!((status, &body), (404, &not_found));
    // A malformed request stays a 400.
    let (status, _, body) = browser.post("/api/registration/verify-email/", json!({"key": ""}), true).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["key"].is_array(), "{body}");
    let (status, _, body) = browser.post("/api/registration/verify-email/", json!({"token": "x"}), true).await;
    assert_eq!(status, 400, "{body}");

    // A link replaced by a newer one.
    sign_up(&mut stack.identity.users(), "hal").await;
    let first = verify_key(&smtp.wait_for_subject(&email("hal"), VERIFY, ARRIVAL).await, &base);
    let (status, _, _) = browser.post("/api/registration/resend-email/", json!({"email": email("hal")}), true).await;
    assert_eq!(status, 200);
    let mails = smtp.wait_for_all(&email("hal"), Some(VERIFY), 2, ARRIVAL).await;
    let newest = verify_key(&mails[1], &base);
    let (status, _, body) = browser.post("/api/registration/verify-email/", json!({"key": first}), true).await;
    assert_eq!((status, &body), (404, &not_found), "the replaced link");

    // Ten clicks on the newest at once: one verifies, nine hear it is gone.
    let answers = burst(10, |_| {
        let (stack, key) = (&stack, newest.clone());
        async move {
            let mut browser = self::browser(stack).await;
            let (status, _, body) = browser.post("/api/registration/verify-email/", json!({"key": key}), true).await;
            (status, body)
        }
    })
    .await;
    let verified = answers.iter().filter(|answer| **answer == (200, json!({"detail": "ok"}))).count();
    let gone = answers.iter().filter(|answer| **answer == (404, not_found.clone())).count();
    assert_eq!((verified, gone), (1, 9), "{answers:#?}");
    let (status, _, body) = browser.post("/api/registration/verify-email/", json!({"key": newest}), true).await;
    assert_eq!((status, &body), (404, &not_found), "the used link");
    let user = log_in(&mut stack.identity.auth(), "hal").await.user.unwrap();
    assert!(user.email_verified);
}

#[tokio::test]
async fn an_expired_verification_key_is_a_404() {
    let smtp = SmtpServer::start().await;
    let ttl = Duration::from_secs(1);
    let stack = stack(&smtp, |config| config.email_verification_ttl = ttl.into()).await;
    sign_up(&mut stack.identity.users(), "ian").await;
    let key = verify_key(&smtp.wait_for_subject(&email("ian"), VERIFY, ARRIVAL).await, &stack.facade.base());
    // The link was made before its message left: a lifetime after it arrived, it is past it.
    // (Waiting out a lifetime is the behaviour under test, not synchronisation.)
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let mut browser = browser(&stack).await;
    let (status, _, body) = browser.post("/api/registration/verify-email/", json!({"key": key}), true).await;
    assert_eq!((status, body), (404, json!({"detail": "Not found."})));
    let user = log_in(&mut stack.identity.auth(), "ian").await.user.unwrap();
    assert!(!user.email_verified);
}

// === No caller: django-graphql-auth's login_required ===

#[tokio::test(flavor = "multi_thread")]
async fn password_and_email_changes_without_a_live_caller_answer_unauthenticated_in_their_errors() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |_| {}).await;
    sign_up(&mut stack.identity.users(), "jo").await;
    smtp.wait_for_subject(&email("jo"), VERIFY, ARRIVAL).await;
    let gql = stack.client();
    let (dead, _) = gql.token_auth("jo", PASSWORD).await;
    let body = gql.as_user(&dead, "mutation { logout { success } }", json!({})).await;
    assert_eq!(body["data"]["logout"]["success"], true, "{body}");
    let new = "jo@new.example.com";
    let change = json!({"old": PASSWORD, "p1": "a brand new passphrase", "p2": "a brand new passphrase"});
    let refused_change = json!({"success": false, "errors": unauthenticated(), "token": null, "refreshToken": null});
    let refused_email = json!({"success": false, "errors": unauthenticated()});

    // Anonymous, with a dead token, and as a browser without a session (CSRF token and all).
    let mut cookies = browser(&stack).await;
    for (who, authorization) in [("anonymous", None), ("a dead token", Some(format!("Bearer {dead}")))] {
        let (status, body) = gql.post(authorization.as_deref(), PASSWORD_CHANGE, change.clone()).await;
        assert_eq!((status, &body["data"]["passwordChange"]), (200, &refused_change), "{who}: {body}");
        assert_eq!(body["errors"], Value::Null, "{who}: {body}");
        let (status, body) =
            gql.post(authorization.as_deref(), REQUEST_EMAIL_CHANGE, json!({"e": new, "p": PASSWORD})).await;
        assert_eq!((status, &body["data"]["requestEmailChange"]), (200, &refused_email), "{who}: {body}");
        assert_eq!(body["errors"], Value::Null, "{who}: {body}");
    }
    let query =
        format!(r#"mutation {{ requestEmailChange(newEmail: "{new}", password: "{PASSWORD}") {{ success errors }} }}"#);
    let (status, body) = cookies.graphql(&query, true).await;
    assert_eq!((status, &body["data"]["requestEmailChange"]), (200, &refused_email), "{body}");

    // Ten at once with the dead token: each refused the same way.
    let answers = burst(10, |i| {
        let (gql, dead) = (gql.clone(), dead.clone());
        async move {
            if i % 2 == 0 {
                gql.as_user(&dead, REQUEST_EMAIL_CHANGE, json!({"e": new, "p": PASSWORD})).await["data"]["requestEmailChange"].clone()
            } else {
                let change = json!({"old": PASSWORD, "p1": format!("new passphrase {i}"), "p2": format!("new passphrase {i}")});
                gql.as_user(&dead, PASSWORD_CHANGE, change).await["data"]["passwordChange"].clone()
            }
        }
    })
    .await;
    for (i, answer) in answers.iter().enumerate() {
        let expected = if i % 2 == 0 { &refused_email } else { &refused_change };
        assert_eq!(answer, expected, "request {i}");
    }

    // Nothing changed: the password stands, and no link went to the new address.
    gql.token_auth("jo", PASSWORD).await;
    after_a_marker(&stack, &smtp, "jo").await;
    assert_eq!(subjects(&smtp, new), Vec::<String>::new());
    assert_eq!(subjects(&smtp, &email("jo")), [VERIFY, RESET]);
}

// === A user's own updateUser of email ===

#[tokio::test(flavor = "multi_thread")]
async fn a_users_own_update_of_email_is_bad_input_naming_request_email_change_and_a_manager_sets_it_at_once() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |_| {}).await;
    let kay = sign_up(&mut stack.identity.users(), "kay").await;
    smtp.wait_for_subject(&email("kay"), VERIFY, ARRIVAL).await;
    let gql = stack.client();
    let (token, _) = gql.token_auth("kay", PASSWORD).await;
    let own = |address: String| json!({"id": kay.id, "input": {"email": address}});

    let body = gql.as_user(&token, UPDATE_USER, own("kay@new.example.com".into())).await;
    assert_eq!(body["data"], Value::Null, "{body}");
    let error = &body["errors"][0];
    let why = "is changed by requestEmailChange, which asks for your password";
    assert_eq!(
        (&error["message"], &error["extensions"]["code"]),
        (&json!(format!("user.email: {why}")), &json!("BAD_USER_INPUT")),
        "{body}"
    );
    assert_eq!(error["extensions"]["fieldViolations"], json!([{"field": "user.email", "message": why}]), "{body}");

    // Ten at once, to ten addresses: all refused, none mailed.
    let answers = burst(10, |i| {
        let (gql, token, variables) = (gql.clone(), token.clone(), own(format!("kay{i}@new.example.com")));
        async move { gql.as_user(&token, UPDATE_USER, variables).await }
    })
    .await;
    for (i, body) in answers.iter().enumerate() {
        assert_eq!(error_code(body), "BAD_USER_INPUT", "update {i}: {body}");
    }
    let me = gql.as_user(&token, WHOAMI, json!({})).await;
    assert_eq!(me["data"]["whoami"]["email"], email("kay"), "{me}");
    after_a_marker(&stack, &smtp, "kay").await;
    for i in 0..10 {
        assert_eq!(subjects(&smtp, &format!("kay{i}@new.example.com")), Vec::<String>::new());
    }
    assert_eq!(subjects(&smtp, "kay@new.example.com"), Vec::<String>::new());

    // A manager sets any address at once (then unverified).
    let (root, _) = gql.token_auth("root", PASSWORD).await;
    let body = gql.as_user(&root, UPDATE_USER, own("kay@managed.example.com".into())).await;
    assert_eq!(body["data"]["updateUser"], json!({"email": "kay@managed.example.com", "verified": false}), "{body}");
}
