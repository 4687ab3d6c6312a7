//! Accounts by email, end to end over a real SMTP server (tests/smtp/sink.py): sign-up and
//! verification, password reset and email change over gRPC, REST (dj-rest-auth) and GraphQL
//! (django-graphql-auth); links that work once under bursts, expire, and give way to newer
//! ones; an SMTP outage; no enumeration and throttling; the file outbox; and replicas on one
//! PostgreSQL database sending each message once.

use std::time::{Duration, Instant};

use e2e::{smtp::TlsMode, *};
use futures::future::join_all;
use identity_core::{EmailVerification, Secret};
use identity_proto::pb;
use identity_service::config::DEFAULT_ISSUER;
use serde_json::{Value, json};
use tonic::{Code, Response, Status};
use tonic_types::StatusExt;

pub(crate) const VERIFY: &str = "Verify your email address";
pub(crate) const RESET: &str = "Reset your password";
pub(crate) const CHANGE: &str = "Confirm your new email address";
pub(crate) const NOTICE: &str = "Your email address is being changed";
/// How long a message may take to arrive (it is sent by a background task).
pub(crate) const ARRIVAL: Duration = Duration::from_secs(30);
const NEW_PASSWORD: &str = "a brand new passphrase";
/// A public URL that is not where anything listens: links must be built from it.
const PUBLIC: &str = "https://id.example.com";

// === Helpers ===

pub(crate) fn email(name: &str) -> String {
    format!("{name}@example.com")
}

/// The identity service alone on `db`, mailing to `smtp`, with `change` made to its config.
async fn service(db: &TestDb, smtp: &SmtpServer, change: impl FnOnce(&mut identity_service::Config)) -> Service {
    let mut config = mail_config(db, smtp);
    change(&mut config);
    Service::start(config).await
}

/// Both servers on a fresh database, mailing to `smtp`, links leading to the facade, a
/// manager `root`.
pub(crate) async fn stack(smtp: &SmtpServer, change: impl FnOnce(&mut identity_service::Config)) -> Stack {
    let db = TestDb::new().await;
    let mut config = mail_config(&db, smtp);
    config.bootstrap_manager = Some(Secret::new(format!("root:{PASSWORD}")));
    change(&mut config);
    Stack::start_with(db, config, |_| {}).await
}

/// The `n`th (from 1) message to `to` with `subject`, once it arrived.
async fn nth_mail(smtp: &SmtpServer, to: &str, subject: &str, n: usize) -> Mail {
    smtp.wait_for_all(to, Some(subject), n, ARRIVAL).await.swap_remove(n - 1)
}

/// The `key` of the verification link in `mail`, whose links start with `base`.
pub(crate) fn verify_key(mail: &Mail, base: &str) -> String {
    query_param(&mail.link(&format!("{base}/account/verify-email?key=")), "key")
}

/// The `(uid, token)` of the reset link in `mail`.
fn reset_link(mail: &Mail, base: &str) -> (String, String) {
    let link = mail.link(&format!("{base}/account/reset-password?uid="));
    (query_param(&link, "uid"), query_param(&link, "token"))
}

/// The `key` of the email-change link in `mail`.
fn change_key(mail: &Mail, base: &str) -> String {
    query_param(&mail.link(&format!("{base}/account/confirm-email?key=")), "key")
}

/// The first field violation of a status: (field, description).
fn violation(status: &Status) -> (String, String) {
    let bad = status.get_details_bad_request().unwrap_or_else(|| panic!("no BadRequest detail in {status:?}"));
    let first = bad.field_violations.first().unwrap_or_else(|| panic!("no violation in {status:?}"));
    (first.field.clone(), first.description.clone())
}

/// Asserts a link was refused: INVALID_ARGUMENT on `token`. Returns the description.
fn assert_refused<T: std::fmt::Debug>(result: Result<Response<T>, Status>, what: &str) -> String {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    let (field, description) = violation(&status);
    assert_eq!(field, "token", "{what}: {status:?}");
    description
}

fn reset_request(token: &str, new_password: &str, user_id: &str) -> pb::ResetPasswordRequest {
    pb::ResetPasswordRequest { token: token.into(), new_password: new_password.into(), user_id: user_id.into() }
}

async fn request_reset(
    accounts: &mut Accounts,
    address: &str,
) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
    accounts.request_password_reset(pb::RequestPasswordResetRequest { email: address.into() }).await
}

async fn resend(accounts: &mut Accounts, address: &str) -> Result<Response<pb::ResendVerificationResponse>, Status> {
    accounts.resend_verification(pb::ResendVerificationRequest { email: address.into() }).await
}

async fn verify(accounts: &mut Accounts, key: &str) -> Result<Response<pb::VerifyEmailResponse>, Status> {
    accounts.verify_email(pb::VerifyEmailRequest { token: key.into() }).await
}

async fn confirm(accounts: &mut Accounts, key: &str) -> Result<Response<pb::ConfirmEmailChangeResponse>, Status> {
    accounts.confirm_email_change(pb::ConfirmEmailChangeRequest { token: key.into() }).await
}

async fn login(auth: &mut Auth, username: &str, password: &str) -> Result<pb::LoginResponse, Status> {
    let request = pb::LoginRequest { username: username.into(), password: password.into() };
    auth.login(request).await.map(Response::into_inner)
}

async fn ask_email_change(accounts: &mut Accounts, access_token: &str, new_email: &str) -> Result<(), Status> {
    let request = bearer(
        pb::RequestEmailChangeRequest { new_email: new_email.into(), current_password: PASSWORD.into() },
        access_token,
    );
    accounts.request_email_change(request).await.map(drop)
}

async fn get_user(users: &mut Users, access_token: &str, id: &str) -> pb::User {
    let request = bearer(pb::GetUserRequest { id: id.into() }, access_token);
    users.get_user(request).await.unwrap().into_inner().user.unwrap()
}

/// An `UpdateUser` of the user `id` setting the fields of `user` named in `paths`.
pub(crate) fn update_request(id: &str, user: pb::User, paths: &[&str]) -> pb::UpdateUserRequest {
    pb::UpdateUserRequest {
        user: Some(pb::User { id: id.into(), ..user }),
        update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|path| path.to_string()).collect() }),
    }
}

/// Waits until the outbox holds nothing left to send and the sender holds nothing it is
/// sending: every message queued so far has arrived, or never will (voided, or to nobody). A
/// message voided while the sender had it is no longer pending, but may still leave: its
/// claim (`claimed_until`) is cleared only once the sender is done with it.
pub(crate) async fn drained(db: &TestDb) {
    let store = db.connect().await;
    let pending = "SELECT COUNT(*) FROM outbox WHERE (sent_at IS NULL AND failed_at IS NULL) OR claimed_until <> 0";
    count_reaches(&store, pending, 0, ARRIVAL).await;
}

/// The subjects of the messages to `to`, in arrival order.
pub(crate) fn subjects(smtp: &SmtpServer, to: &str) -> Vec<String> {
    smtp.to(to).into_iter().map(|mail| mail.subject).collect()
}

/// Runs `count` copies of `call` at once; their results in order.
pub(crate) async fn burst<T, F, Fut>(count: usize, call: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    join_all((0..count).map(call)).await
}

/// Median and 90th percentile, in milliseconds.
fn median_p90(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.9))
}

/// Waits a while and returns how many messages `to` received with `subject`: for the checks
/// that something was sent once and not again.
async fn count_after_a_while(smtp: &SmtpServer, to: &str, subject: &str) -> usize {
    // Several retry periods (200 ms) and sender polls (1 s): a duplicate would have come.
    tokio::time::sleep(Duration::from_secs(3)).await;
    smtp.to(to).iter().filter(|mail| mail.subject == subject).count()
}

// === gRPC: each flow ===

#[tokio::test]
async fn a_sign_up_mails_a_verification_link_that_verifies_the_address_once() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |_| {}).await;
    let (mut accounts, mut users) = (service.accounts(), service.users());
    let ann = sign_up(&mut users, "ann").await;
    assert!(!ann.email_verified, "a new address is not verified");

    let mail = smtp.wait_for_subject(&email("ann"), VERIFY, ARRIVAL).await;
    assert_eq!(mail.from, "no-reply@identity.test");
    assert!(mail.header("From").unwrap().contains("<no-reply@identity.test>"), "{:?}", mail.headers);
    assert!(mail.header("To").unwrap().contains("ann@example.com"));
    assert!(mail.text.contains("ann"), "greets the user by name: {}", mail.text);
    // No public URL configured: links start with the issuer. Both parts carry the link.
    let key = verify_key(&mail, DEFAULT_ISSUER);
    let html = mail.html.as_deref().expect("an HTML part");
    assert!(html.replace("&amp;", "&").contains(&format!("/account/verify-email?key={key}")), "{html}");

    let verified = verify(&mut accounts, &key).await.unwrap().into_inner().user.unwrap();
    assert_eq!((verified.id.as_str(), verified.email_verified), (ann.id.as_str(), true));
    let access = log_in(&mut service.auth(), "ann").await.access_token;
    assert!(get_user(&mut users, &access, &ann.id).await.email_verified);
    assert_refused(verify(&mut accounts, &key).await, "a used link");
    assert_refused(verify(&mut accounts, "not-a-key-we-sent").await, "a made-up link");
}

#[tokio::test]
async fn under_required_verification_login_waits_for_the_link_and_says_so_only_after_the_right_password() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |config| {
        config.email_verification = EmailVerification::Required;
        config.public_url = Some(PUBLIC.into());
    })
    .await;
    let (mut accounts, mut auth) = (service.accounts(), service.auth());
    sign_up(&mut service.users(), "bea").await;

    let refused = login(&mut auth, "bea", PASSWORD).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let info = refused.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "EMAIL_NOT_VERIFIED");
    // A wrong password learns nothing of the address: the usual refusal, as for nobody.
    let wrong = login(&mut auth, "bea", "not her password").await.unwrap_err();
    let nobody = login(&mut auth, "nobody", "not her password").await.unwrap_err();
    assert_eq!((wrong.code(), wrong.message()), (Code::Unauthenticated, nobody.message()), "{wrong:?}");
    assert!(wrong.get_details_error_info().is_none_or(|info| info.reason != "EMAIL_NOT_VERIFIED"));

    // The sign-up's link is live (or on its way): the refused login mailed none. A resend
    // mails a second, which replaces it.
    resend(&mut accounts, &email("bea")).await.unwrap();
    let keys: Vec<String> = smtp
        .wait_for_all(&email("bea"), Some(VERIFY), 2, ARRIVAL)
        .await
        .iter()
        .map(|mail| verify_key(mail, PUBLIC))
        .collect();
    drained(&db).await;
    assert_eq!(subjects(&smtp, &email("bea")), [VERIFY, VERIFY], "the sign-up's link and the resend's");
    assert_ne!(keys[0], keys[1]);
    assert_refused(verify(&mut accounts, &keys[0]).await, "a link replaced by a newer one");
    verify(&mut accounts, &keys[1]).await.unwrap();
    let session = login(&mut auth, "bea", PASSWORD).await.expect("verified, she logs in");
    assert!(session.user.unwrap().email_verified);
}

#[tokio::test]
async fn under_required_verification_a_login_with_the_right_password_mails_a_fresh_link_and_a_wrong_one_mails_none() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |config| {
        config.email_verification = EmailVerification::Required;
        // Long enough that the login's fresh link outlives the checks below on a loaded
        // machine (a second has been too short), short enough to wait out the first.
        config.email_verification_ttl = Duration::from_secs(4).into();
    })
    .await;
    let (mut accounts, mut auth) = (service.accounts(), service.auth());
    sign_up(&mut service.users(), "gus").await;
    let first = verify_key(&smtp.wait_for_subject(&email("gus"), VERIFY, ARRIVAL).await, DEFAULT_ISSUER);
    // The sign-up's link expires unused (as one sent before verification was required would
    // be missing): now a login has reason to mail another.
    tokio::time::sleep(Duration::from_millis(4100)).await;

    let wrong = login(&mut auth, "gus", "not his password").await.unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    let refused = login(&mut auth, "gus", PASSWORD).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(refused.get_details_error_info().expect("an ErrorInfo").reason, "EMAIL_NOT_VERIFIED");

    // One more link: the right password's (the wrong one's would have come before it). While
    // it is live, a further login mails none.
    let fresh = verify_key(&nth_mail(&smtp, &email("gus"), VERIFY, 2).await, DEFAULT_ISSUER);
    let again = login(&mut auth, "gus", PASSWORD).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    drained(&db).await;
    assert_eq!(subjects(&smtp, &email("gus")), [VERIFY, VERIFY], "one link, while it is live");
    assert_ne!(first, fresh);
    assert_refused(verify(&mut accounts, &first).await, "the sign-up's link, expired and replaced");
    verify(&mut accounts, &fresh).await.expect("the link the login mailed");
    let session = login(&mut auth, "gus", PASSWORD).await.expect("verified, he logs in");
    assert!(session.user.unwrap().email_verified);
}

#[tokio::test]
async fn under_required_verification_logins_mail_links_within_the_mail_limits_and_all_say_email_not_verified() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |config| {
        config.email_verification = EmailVerification::Required;
        config.email_verification_ttl = Duration::from_secs(1).into();
        config.mail_address_limit = 2;
    })
    .await;
    let mut auth = service.auth();
    sign_up(&mut service.users(), "hal").await;
    smtp.wait_for_subject(&email("hal"), VERIFY, ARRIVAL).await;

    // Each login comes once the last link expired, so each has reason to mail one: two may.
    for attempt in 0..5 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let refused = login(&mut auth, "hal", PASSWORD).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "login {attempt}: {refused:?}");
        assert_eq!(refused.get_details_error_info().expect("an ErrorInfo").reason, "EMAIL_NOT_VERIFIED");
        drained(&db).await;
    }
    assert_eq!(subjects(&smtp, &email("hal")), [VERIFY; 3], "the sign-up's link, then two of five logins'");
}

#[tokio::test]
async fn a_password_reset_by_mail_sets_the_new_password_and_retires_the_old() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |config| config.public_url = Some(PUBLIC.into())).await;
    let (mut accounts, mut auth) = (service.accounts(), service.auth());
    let cat = sign_up(&mut service.users(), "cat").await;
    let before = log_in(&mut auth, "cat").await;

    // The address as typed: any case, stray blanks; the mail goes to the account's address.
    request_reset(&mut accounts, " CAT@Example.COM ").await.unwrap();
    let mail = smtp.wait_for_subject(&email("cat"), RESET, ARRIVAL).await;
    assert!(mail.header("To").unwrap().contains("cat@example.com"), "{:?}", mail.headers);
    let (uid, token) = reset_link(&mail, PUBLIC);
    assert_eq!(uid, cat.id);

    // Refusals that leave the link usable: another user's uid, a weak password.
    let other = sign_up(&mut service.users(), "cod").await;
    let status = accounts.reset_password(reset_request(&token, NEW_PASSWORD, &other.id)).await.unwrap_err();
    assert_eq!((status.code(), violation(&status).0.as_str()), (Code::InvalidArgument, "user_id"), "{status:?}");
    let status = accounts.reset_password(reset_request(&token, "cat", &uid)).await.unwrap_err();
    assert_eq!((status.code(), violation(&status).0.as_str()), (Code::InvalidArgument, "new_password"), "{status:?}");

    let done = accounts.reset_password(reset_request(&token, NEW_PASSWORD, &uid)).await.unwrap().into_inner();
    assert_eq!(done.revoked_sessions, 1, "her one session");
    assert!(done.user.unwrap().email_verified, "the link proved the address");
    let dead = service.auth().authenticate(access(&before.access_token)).await.unwrap_err();
    assert_eq!(dead.code(), Code::Unauthenticated);
    assert_eq!(login(&mut auth, "cat", PASSWORD).await.unwrap_err().code(), Code::Unauthenticated);
    login(&mut auth, "cat", NEW_PASSWORD).await.expect("the new password works");
    assert_refused(accounts.reset_password(reset_request(&token, "yet another passphrase", &uid)).await, "used");
}

#[tokio::test]
async fn an_email_change_moves_the_address_only_when_the_link_to_the_new_one_is_followed() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |config| config.public_url = Some(PUBLIC.into())).await;
    let (mut accounts, mut users) = (service.accounts(), service.users());
    let dan = sign_up(&mut users, "dan").await;
    let access = log_in(&mut service.auth(), "dan").await.access_token;
    let new = "dan@new.example.com";

    let anonymous = accounts
        .request_email_change(pb::RequestEmailChangeRequest {
            new_email: new.into(),
            current_password: PASSWORD.into(),
        })
        .await;
    assert_eq!(anonymous.unwrap_err().code(), Code::Unauthenticated);
    ask_email_change(&mut accounts, &access, new).await.unwrap();
    let link = smtp.wait_for_subject(new, CHANGE, ARRIVAL).await;
    let notice = smtp.wait_for_subject(&email("dan"), NOTICE, ARRIVAL).await;
    assert!(notice.text.contains(new), "the notice names the new address: {}", notice.text);
    assert!(notice.try_link(&format!("{PUBLIC}/account/confirm-email")).is_none(), "the old address gets no link");
    assert!(smtp.to(new).iter().all(|mail| mail.subject == CHANGE), "only the link goes to the new address");

    let unchanged = get_user(&mut users, &access, &dan.id).await;
    assert_eq!(unchanged.email, email("dan"), "nothing changes before the link is followed");
    let moved = confirm(&mut accounts, &change_key(&link, PUBLIC)).await.unwrap().into_inner().user.unwrap();
    assert_eq!((moved.email.as_str(), moved.email_verified), (new, true));
    assert_eq!(get_user(&mut users, &access, &dan.id).await.email, new);
    login(&mut service.auth(), new, PASSWORD).await.expect("logs in by the new address");
    assert_refused(confirm(&mut accounts, &change_key(&link, PUBLIC)).await, "used");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_email_change_without_the_current_password_is_refused_and_mails_nobody_even_in_a_burst() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |_| {}).await;
    sign_up(&mut service.users(), "eli").await;
    smtp.wait_for_subject(&email("eli"), VERIFY, ARRIVAL).await;
    let access = log_in(&mut service.auth(), "eli").await.access_token;
    let new = "eli@new.example.com";
    let ask = |password: &str| {
        let request = pb::RequestEmailChangeRequest { new_email: new.into(), current_password: password.into() };
        let (mut accounts, request) = (service.accounts(), bearer(request, &access));
        async move { accounts.request_email_change(request).await }
    };
    let assert_wrong_password = |answer: Result<_, Status>, what: &str| {
        let status = answer.expect_err(what);
        let field = violation(&status).0;
        assert_eq!((status.code(), field.as_str()), (Code::InvalidArgument, "current_password"), "{what}: {status:?}");
    };

    assert_wrong_password(ask("").await, "no password");
    assert_wrong_password(ask("not his password").await, "a wrong password");
    // A stolen session guessing at once.
    for (i, answer) in burst(10, |i| ask(&format!("guess number {i}"))).await.into_iter().enumerate() {
        assert_wrong_password(answer, &format!("guess {i}"));
    }

    // A marker: once it arrived, anything queued before it would have too.
    request_reset(&mut service.accounts(), &email("eli")).await.unwrap();
    smtp.wait_for_subject(&email("eli"), RESET, ARRIVAL).await;
    assert_eq!(subjects(&smtp, new), Vec::<String>::new(), "mail went to the new address");
    assert_eq!(subjects(&smtp, &email("eli")), [VERIFY, RESET], "mail went to the old address");

    // The right password: the change goes ahead.
    ask(PASSWORD).await.expect("the right password");
    smtp.wait_for_subject(new, CHANGE, ARRIVAL).await;
    smtp.wait_for_subject(&email("eli"), NOTICE, ARRIVAL).await;
}

#[tokio::test]
async fn a_users_own_update_of_their_email_is_refused_and_mails_nothing() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |_| {}).await;
    let mut users = service.users();
    let fay = sign_up(&mut users, "fay").await;
    smtp.wait_for_subject(&email("fay"), VERIFY, ARRIVAL).await;
    let access = log_in(&mut service.auth(), "fay").await.access_token;
    let new = "fay@new.example.com";

    // Without the password, UpdateUser cannot start what RequestEmailChange asks it for.
    let user = pb::User { email: new.into(), ..Default::default() };
    let status = users.update_user(bearer(update_request(&fay.id, user, &["email"]), &access)).await.unwrap_err();
    assert_eq!((status.code(), violation(&status).0.as_str()), (Code::InvalidArgument, "user.email"), "{status:?}");
    assert_eq!(get_user(&mut users, &access, &fay.id).await.email, email("fay"));

    request_reset(&mut service.accounts(), &email("fay")).await.unwrap();
    smtp.wait_for_subject(&email("fay"), RESET, ARRIVAL).await;
    assert_eq!(subjects(&smtp, new), Vec::<String>::new(), "mail went to the new address");
    assert_eq!(subjects(&smtp, &email("fay")), [VERIFY, RESET], "mail went to the old address");
}

// === REST (dj-rest-auth) and GraphQL (django-graphql-auth) ===

#[tokio::test]
async fn rest_sign_up_verification_resend_and_reset_answer_as_dj_rest_auth() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |config| config.email_verification = EmailVerification::Required).await;
    let base = stack.facade.base();
    let mut browser = Browser::new(&stack.facade);
    browser.get("/api/csrf").await;

    let sign_up = json!({"username": "eve", "email": email("eve"), "password1": PASSWORD, "password2": PASSWORD});
    let (status, _, body) = browser.post("/api/registration/", sign_up, true).await;
    assert_eq!((status, body), (201, json!({"detail": "Verification e-mail sent."})));
    let mismatch = json!({"username": "fay", "email": email("fay"), "password1": PASSWORD, "password2": "other one"});
    let (status, _, body) = browser.post("/api/registration/", mismatch, true).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["password2"].is_array(), "{body}");
    // A taken name: dj-rest-auth's 400 naming the field.
    let taken = json!({"username": "eve", "email": email("eve2"), "password1": PASSWORD, "password2": PASSWORD});
    let (status, _, body) = browser.post("/api/registration/", taken, true).await;
    assert_eq!((status, &body["username"]), (400, &json!(["A user with that username already exists."])), "{body}");

    // Required: the right password hears why; a wrong one the usual 401.
    let (status, _, body) = browser.post("/api/login", json!({"username": "eve", "password": PASSWORD}), true).await;
    assert_eq!((status, body), (403, json!({"detail": "E-mail is not verified."})));
    let (status, _, _) = browser.post("/api/login", json!({"username": "eve", "password": "wrong one"}), true).await;
    assert_eq!(status, 401);

    // The resend mails a second link: the newest works; the replaced one is dj-rest-auth's 404.
    let (status, _, body) = browser.post("/api/registration/resend-email/", json!({"email": email("eve")}), true).await;
    assert_eq!((status, body), (200, json!({"detail": "ok"})));
    let first = verify_key(&nth_mail(&smtp, &email("eve"), VERIFY, 1).await, &base);
    let newest = verify_key(&nth_mail(&smtp, &email("eve"), VERIFY, 2).await, &base);
    let (status, _, body) = browser.post("/api/registration/verify-email/", json!({"key": first}), true).await;
    assert_eq!((status, body), (404, json!({"detail": "Not found."})), "a replaced link");
    let (status, _, body) = browser.post("/api/registration/verify-email/", json!({"key": newest}), true).await;
    assert_eq!((status, body), (200, json!({"detail": "ok"})));
    browser.log_in("eve", PASSWORD).await;

    let (status, _, body) = browser.post("/api/password/reset/", json!({"email": email("eve")}), true).await;
    assert_eq!((status, body), (200, json!({"detail": "Password reset e-mail has been sent."})));
    let (uid, token) = reset_link(&smtp.wait_for_subject(&email("eve"), RESET, ARRIVAL).await, &base);
    let confirm =
        |second: &str| json!({"uid": uid, "token": token, "new_password1": NEW_PASSWORD, "new_password2": second});
    let (status, _, body) = browser.post("/api/password/reset/confirm/", confirm("typo"), true).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["new_password2"].is_array(), "{body}");
    let (status, _, body) = browser.post("/api/password/reset/confirm/", confirm(NEW_PASSWORD), true).await;
    assert_eq!((status, body), (200, json!({"detail": "Password has been reset with the new password."})));
    let (status, _, _) = browser.get("/api/me").await;
    assert_eq!(status, 401, "the reset ended the browser's session");
    let (status, _, _) = browser.post("/api/password/reset/confirm/", confirm(NEW_PASSWORD), true).await;
    assert_eq!(status, 400, "a used link");

    browser.get("/api/csrf").await;
    let (status, _, _) = browser.post("/api/login", json!({"username": "eve", "password": PASSWORD}), true).await;
    assert_eq!(status, 401, "the old password");
    browser.log_in("eve", NEW_PASSWORD).await;
}

#[tokio::test]
async fn rest_password_change_voids_an_outstanding_reset_link() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |_| {}).await;
    let base = stack.facade.base();
    sign_up(&mut stack.identity.users(), "gil").await;
    request_reset(&mut stack.identity.accounts(), &email("gil")).await.unwrap();
    let (uid, token) = reset_link(&smtp.wait_for_subject(&email("gil"), RESET, ARRIVAL).await, &base);

    let mut browser = Browser::new(&stack.facade);
    browser.log_in("gil", PASSWORD).await;
    let change = json!({"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD});
    let (status, _, body) = browser.post("/api/password/change/", change, true).await;
    assert_eq!((status, body), (200, json!({"detail": "New password has been saved."})));
    let (status, _, _) = browser.get("/api/me").await;
    assert_eq!(status, 200, "the changing session stays");

    let confirm = json!({"uid": uid, "token": token, "new_password1": "an attacker's choice", "new_password2": "an attacker's choice"});
    let (status, _, body) = browser.post("/api/password/reset/confirm/", confirm, true).await;
    assert_eq!(status, 400, "the link died with the old password: {body}");
    login(&mut stack.identity.auth(), "gil", NEW_PASSWORD).await.expect("the changed password stands");
}

const REGISTER: &str = "mutation($email: String!, $username: String!, $p1: String!, $p2: String!) {
    register(email: $email, username: $username, password1: $p1, password2: $p2) { success errors token refreshToken } }";
const VERIFY_ACCOUNT: &str = "mutation($t: String!) { verifyAccount(token: $t) { success errors } }";
const RESEND: &str = "mutation($e: String!) { resendActivationEmail(email: $e) { success errors } }";
const SEND_RESET: &str = "mutation($e: String!) { sendPasswordResetEmail(email: $e) { success errors } }";
const PASSWORD_RESET: &str = "mutation($t: String!, $p1: String!, $p2: String!) {
    passwordReset(token: $t, newPassword1: $p1, newPassword2: $p2) { success errors } }";
pub(crate) const PASSWORD_CHANGE: &str = "mutation($old: String!, $p1: String!, $p2: String!) {
    passwordChange(oldPassword: $old, newPassword1: $p1, newPassword2: $p2) { success errors token refreshToken } }";
const ME: &str = "{ whoami { username verified } }";

fn register_variables(name: &str, password2: &str) -> Value {
    json!({"email": email(name), "username": name, "p1": PASSWORD, "p2": password2})
}

#[tokio::test]
async fn graphql_register_verify_and_reset_answer_as_django_graphql_auth() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |_| {}).await;
    let (gql, base) = (stack.client(), stack.facade.base());

    let body = gql.anonymous(REGISTER, register_variables("hal", PASSWORD)).await;
    let registered = &body["data"]["register"];
    assert_eq!((&registered["success"], &registered["errors"]), (&json!(true), &Value::Null), "{body}");
    let token = registered["token"].as_str().unwrap_or_else(|| panic!("optional: tokens at once: {body}")).to_owned();
    assert!(registered["refreshToken"].is_string(), "{body}");
    let me = gql.as_user(&token, ME, json!({})).await;
    assert_eq!(me["data"]["whoami"], json!({"username": "hal", "verified": false}), "{me}");
    let body = gql.anonymous(REGISTER, register_variables("ian", "not the same")).await;
    assert_eq!(body["data"]["register"]["success"], false, "{body}");
    assert!(body["data"]["register"]["errors"]["password2"].is_array(), "{body}");

    let key = verify_key(&smtp.wait_for_subject(&email("hal"), VERIFY, ARRIVAL).await, &base);
    let body = gql.anonymous(VERIFY_ACCOUNT, json!({"t": key})).await;
    assert_eq!(body["data"]["verifyAccount"], json!({"success": true, "errors": null}), "{body}");
    assert_eq!(gql.as_user(&token, ME, json!({})).await["data"]["whoami"]["verified"], true);
    let body = gql.anonymous(VERIFY_ACCOUNT, json!({"t": key})).await;
    assert_eq!(body["data"]["verifyAccount"]["success"], false, "{body}");
    assert!(body["data"]["verifyAccount"]["errors"].to_string().contains("invalid_token"), "{body}");

    let body = gql.anonymous(SEND_RESET, json!({"e": email("hal")})).await;
    assert_eq!(body["data"]["sendPasswordResetEmail"], json!({"success": true, "errors": null}), "{body}");
    let (_, reset_token) = reset_link(&smtp.wait_for_subject(&email("hal"), RESET, ARRIVAL).await, &base);
    let body = gql.anonymous(PASSWORD_RESET, json!({"t": reset_token, "p1": NEW_PASSWORD, "p2": "typo"})).await;
    assert_eq!(body["data"]["passwordReset"]["success"], false, "{body}");
    assert!(body["data"]["passwordReset"]["errors"]["newPassword2"].is_array(), "{body}");
    let body = gql.anonymous(PASSWORD_RESET, json!({"t": reset_token, "p1": NEW_PASSWORD, "p2": NEW_PASSWORD})).await;
    assert_eq!(body["data"]["passwordReset"], json!({"success": true, "errors": null}), "{body}");
    assert_eq!(error_code(&gql.as_user(&token, ME, json!({})).await), "UNAUTHENTICATED", "sessions revoked");
    let body = gql.anonymous(PASSWORD_RESET, json!({"t": reset_token, "p1": NEW_PASSWORD, "p2": NEW_PASSWORD})).await;
    assert_eq!(body["data"]["passwordReset"]["success"], false, "a used link: {body}");

    let (token, _) = gql.token_auth("hal", NEW_PASSWORD).await;
    let change = json!({"old": NEW_PASSWORD, "p1": "third time lucky", "p2": "third time lucky"});
    let body = gql.anonymous(PASSWORD_CHANGE, change.clone()).await;
    assert_eq!(
        body["data"]["passwordChange"]["errors"],
        json!({"nonFieldErrors": [{"message": "Unauthenticated.", "code": "unauthenticated"}]}),
        "django-graphql-auth's login_required: {body}"
    );
    let body = gql.as_user(&token, PASSWORD_CHANGE, change).await;
    let changed = &body["data"]["passwordChange"];
    assert_eq!(changed["success"], true, "{body}");
    assert!(changed["token"].is_string() && changed["refreshToken"].is_string(), "{body}");
    gql.token_auth("hal", "third time lucky").await;
}

#[tokio::test]
async fn graphql_under_required_verification_register_gives_no_tokens_and_token_auth_says_email_not_verified() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |config| config.email_verification = EmailVerification::Required).await;
    let (gql, base) = (stack.client(), stack.facade.base());
    let token_auth = "mutation($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }";

    let body = gql.anonymous(REGISTER, register_variables("ivy", PASSWORD)).await;
    let registered = &body["data"]["register"];
    assert_eq!(registered["success"], true, "{body}");
    assert_eq!((&registered["token"], &registered["refreshToken"]), (&Value::Null, &Value::Null), "{body}");
    let refused = gql.anonymous(token_auth, json!({"u": "ivy", "p": PASSWORD})).await;
    assert_eq!(error_code(&refused), "EMAIL_NOT_VERIFIED", "{refused}");
    let wrong = gql.anonymous(token_auth, json!({"u": "ivy", "p": "wrong one"})).await;
    let nobody = gql.anonymous(token_auth, json!({"u": "nobody", "p": "wrong one"})).await;
    assert_eq!(error_code(&wrong), error_code(&nobody), "{wrong} {nobody}");
    assert_ne!(error_code(&wrong), "EMAIL_NOT_VERIFIED");

    // The logins refused for the address (register's own, tokenAuth's) mailed nothing more:
    // the sign-up's link is live. The resend mails a second, which works.
    let body = gql.anonymous(RESEND, json!({"e": email("ivy")})).await;
    assert_eq!(body["data"]["resendActivationEmail"], json!({"success": true, "errors": null}), "{body}");
    drained(&stack.db).await;
    assert_eq!(subjects(&smtp, &email("ivy")), [VERIFY, VERIFY], "the sign-up's link and the resend's");
    let key = verify_key(smtp.to(&email("ivy")).iter().rfind(|mail| mail.subject == VERIFY).unwrap(), &base);
    let body = gql.anonymous(VERIFY_ACCOUNT, json!({"t": key})).await;
    assert_eq!(body["data"]["verifyAccount"]["success"], true, "{body}");
    gql.token_auth("ivy", PASSWORD).await;
}

#[tokio::test]
async fn rest_and_graphql_email_changes_wait_for_the_link_to_the_new_address() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |_| {}).await;
    let base = stack.facade.base();

    // REST, as a logged-in browser.
    sign_up(&mut stack.identity.users(), "abe").await;
    let mut browser = Browser::new(&stack.facade);
    browser.log_in("abe", PASSWORD).await;
    let new = "abe@new.example.com";
    let (status, _, body) =
        browser.post("/api/email/change/", json!({"email": new, "password": "not his password"}), true).await;
    assert_eq!((status, &body["password"]), (400, &json!(["Invalid password."])), "{body}");
    let (status, _, body) = browser.post("/api/email/change/", json!({"email": new, "password": PASSWORD}), true).await;
    assert_eq!((status, body), (200, json!({"detail": "Confirmation e-mail sent."})));
    let link = smtp.wait_for_subject(new, CHANGE, ARRIVAL).await;
    smtp.wait_for_subject(&email("abe"), NOTICE, ARRIVAL).await;
    let (_, _, me) = browser.get("/api/me").await;
    assert_eq!((&me["email"], &me["emailVerified"]), (&json!(email("abe")), &json!(false)), "{me}");
    let key = change_key(&link, &base);
    let (status, _, body) = browser.post("/api/email/change/confirm/", json!({"key": key}), true).await;
    assert_eq!((status, body), (200, json!({"detail": "ok"})));
    let (_, _, me) = browser.get("/api/me").await;
    assert_eq!((&me["email"], &me["emailVerified"]), (&json!(new), &json!(true)), "{me}");
    let (status, _, _) = browser.post("/api/email/change/confirm/", json!({"key": key}), true).await;
    assert_eq!(status, 400, "a used link");
    let (status, _, _) = Browser::new(&stack.facade)
        .post("/api/email/change/", json!({"email": "x@example.com", "password": PASSWORD}), false)
        .await;
    assert!(status == 401 || status == 403, "anonymous: {status}");

    // GraphQL, with a bearer token.
    let gql = stack.client();
    sign_up(&mut stack.identity.users(), "bo").await;
    let (token, _) = gql.token_auth("bo", PASSWORD).await;
    let new = "bo@new.example.com";
    let request =
        "mutation($e: String!, $p: String!) { requestEmailChange(newEmail: $e, password: $p) { success errors } }";
    let body = gql.as_user(&token, request, json!({"e": new, "p": "not his password"})).await;
    assert_eq!(
        body["data"]["requestEmailChange"],
        json!({"success": false, "errors": {"password": [{"message": "Invalid password.", "code": "invalid_password"}]}}),
        "{body}"
    );
    let body = gql.anonymous(request, json!({"e": new, "p": PASSWORD})).await;
    assert_eq!(
        body["data"]["requestEmailChange"],
        json!({"success": false, "errors": {"nonFieldErrors": [{"message": "Unauthenticated.", "code": "unauthenticated"}]}}),
        "django-graphql-auth's login_required: {body}"
    );
    let body = gql.as_user(&token, request, json!({"e": new, "p": PASSWORD})).await;
    assert_eq!(body["data"]["requestEmailChange"], json!({"success": true, "errors": null}), "{body}");
    let key = change_key(&smtp.wait_for_subject(new, CHANGE, ARRIVAL).await, &base);
    smtp.wait_for_subject(&email("bo"), NOTICE, ARRIVAL).await;
    let me = "{ whoami { email verified } }";
    assert_eq!(gql.as_user(&token, me, json!({})).await["data"]["whoami"]["email"], email("bo"));
    let confirm = "mutation($t: String!) { confirmEmailChange(token: $t) { success errors } }";
    let body = gql.anonymous(confirm, json!({"t": key})).await;
    assert_eq!(body["data"]["confirmEmailChange"], json!({"success": true, "errors": null}), "{body}");
    let body = gql.as_user(&token, me, json!({})).await;
    assert_eq!(body["data"]["whoami"], json!({"email": new, "verified": true}), "{body}");
    let body = gql.anonymous(confirm, json!({"t": key})).await;
    assert_eq!(body["data"]["confirmEmailChange"]["success"], false, "a used link: {body}");
    // An address another account has: a form error.
    let body = gql.as_user(&token, request, json!({"e": "abe@new.example.com", "p": PASSWORD})).await;
    assert_eq!(body["data"]["requestEmailChange"]["success"], false, "{body}");
    assert!(body["data"]["requestEmailChange"]["errors"].to_string().contains("unique"), "{body}");
}

// === Links: once, in time, the newest only ===

#[tokio::test(flavor = "multi_thread")]
async fn of_twenty_simultaneous_resets_with_one_link_exactly_one_sets_its_password() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |_| {}).await;
    sign_up(&mut service.users(), "jay").await;
    request_reset(&mut service.accounts(), &email("jay")).await.unwrap();
    let (_, token) = reset_link(&smtp.wait_for_subject(&email("jay"), RESET, ARRIVAL).await, DEFAULT_ISSUER);

    let password = |i: usize| format!("new passphrase number {i}");
    let answers = burst(20, |i| {
        let (mut accounts, token) = (service.accounts(), token.clone());
        async move { accounts.reset_password(reset_request(&token, &password(i), "")).await }
    })
    .await;
    let winners: Vec<usize> = (0..20).filter(|&i| answers[i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{answers:#?}");
    for (i, answer) in answers.into_iter().enumerate().filter(|(i, _)| *i != winners[0]) {
        assert_refused(answer, &format!("reset {i}"));
    }
    let mut auth = service.auth();
    login(&mut auth, "jay", &password(winners[0])).await.expect("the winner's password");
    let loser = (winners[0] + 1) % 20;
    assert_eq!(login(&mut auth, "jay", &password(loser)).await.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread")]
async fn of_twenty_simultaneous_verifications_with_one_link_exactly_one_succeeds() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |_| {}).await;
    sign_up(&mut service.users(), "kay").await;
    let key = verify_key(&smtp.wait_for_subject(&email("kay"), VERIFY, ARRIVAL).await, DEFAULT_ISSUER);

    let answers = burst(20, |_| {
        let (mut accounts, key) = (service.accounts(), key.clone());
        async move { verify(&mut accounts, &key).await }
    })
    .await;
    let successes = answers.iter().filter(|answer| answer.is_ok()).count();
    assert_eq!(successes, 1, "{answers:#?}");
    for answer in answers.into_iter().filter(Result::is_err) {
        assert_refused(answer, "a verification that lost the race");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn of_twenty_simultaneous_confirmations_of_one_email_change_exactly_one_succeeds() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |_| {}).await;
    sign_up(&mut service.users(), "lea").await;
    let access = log_in(&mut service.auth(), "lea").await.access_token;
    ask_email_change(&mut service.accounts(), &access, "lea@new.example.com").await.unwrap();
    let key = change_key(&smtp.wait_for_subject("lea@new.example.com", CHANGE, ARRIVAL).await, DEFAULT_ISSUER);

    let answers = burst(20, |_| {
        let (mut accounts, key) = (service.accounts(), key.clone());
        async move { confirm(&mut accounts, &key).await }
    })
    .await;
    assert_eq!(answers.iter().filter(|answer| answer.is_ok()).count(), 1, "{answers:#?}");
    for answer in answers.into_iter().filter(Result::is_err) {
        assert_refused(answer, "a confirmation that lost the race");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_accounts_confirming_a_move_to_one_address_at_once_one_gets_it() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |_| {}).await;
    let shared = "shared@example.com";
    let mut accesses = Vec::new();
    for name in ["max", "mia"] {
        let user = sign_up(&mut service.users(), name).await;
        let access = log_in(&mut service.auth(), name).await.access_token;
        ask_email_change(&mut service.accounts(), &access, shared).await.unwrap();
        accesses.push((user.id, access));
    }
    let keys: Vec<String> = smtp
        .wait_for_all(shared, Some(CHANGE), 2, ARRIVAL)
        .await
        .iter()
        .map(|mail| change_key(mail, DEFAULT_ISSUER))
        .collect();

    let answers = burst(2, |i| {
        let (mut accounts, key) = (service.accounts(), keys[i].clone());
        async move { confirm(&mut accounts, &key).await }
    })
    .await;
    let codes: Vec<Code> =
        answers.iter().map(|answer| answer.as_ref().map_or_else(Status::code, |_| Code::Ok)).collect();
    assert!(codes.contains(&Code::Ok) && codes.contains(&Code::AlreadyExists), "{answers:#?}");
    let mut users = service.users();
    let mut holders = 0;
    for (id, access) in &accesses {
        holders += usize::from(get_user(&mut users, access, id).await.email == shared);
    }
    assert_eq!(holders, 1, "one address, one account");
}

#[tokio::test(flavor = "multi_thread")]
async fn of_five_reset_links_asked_at_once_only_the_newest_works() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |_| {}).await;
    sign_up(&mut service.users(), "ned").await;
    let answers = burst(5, |_| {
        let mut accounts = service.accounts();
        async move { request_reset(&mut accounts, &email("ned")).await }
    })
    .await;
    assert!(answers.iter().all(Result::is_ok), "{answers:#?}");
    let mails = smtp.wait_for_all(&email("ned"), Some(RESET), 5, ARRIVAL).await;
    let tokens: Vec<String> = mails.iter().map(|mail| reset_link(mail, DEFAULT_ISSUER).1).collect();

    // Older ones first: using the newest would void them anyway.
    let mut accounts = service.accounts();
    for (i, token) in tokens[..4].iter().enumerate() {
        assert_refused(accounts.reset_password(reset_request(token, NEW_PASSWORD, "")).await, &format!("link {i}"));
    }
    accounts.reset_password(reset_request(&tokens[4], NEW_PASSWORD, "")).await.expect("the newest link");
}

#[tokio::test]
async fn expired_links_are_refused_as_expired() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let ttl = Duration::from_secs(1);
    let service = service(&db, &smtp, |config| {
        config.password_reset_ttl = ttl.into();
        config.email_verification_ttl = ttl.into();
        config.email_change_ttl = ttl.into();
    })
    .await;
    let mut accounts = service.accounts();
    sign_up(&mut service.users(), "oli").await;
    let access = log_in(&mut service.auth(), "oli").await.access_token;
    ask_email_change(&mut accounts, &access, "oli@new.example.com").await.unwrap();
    request_reset(&mut accounts, &email("oli")).await.unwrap();
    let verify_mail = smtp.wait_for_subject(&email("oli"), VERIFY, ARRIVAL).await;
    let change_mail = smtp.wait_for_subject("oli@new.example.com", CHANGE, ARRIVAL).await;
    let reset_mail = smtp.wait_for_subject(&email("oli"), RESET, ARRIVAL).await;
    // Each link was made before its message left: a lifetime after the last arrived, all are
    // past it. (Waiting out a lifetime is the behaviour under test, not synchronisation.)
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;

    let expired = |description: String| assert!(description.contains("expired"), "{description}");
    expired(assert_refused(verify(&mut accounts, &verify_key(&verify_mail, DEFAULT_ISSUER)).await, "verify"));
    expired(assert_refused(confirm(&mut accounts, &change_key(&change_mail, DEFAULT_ISSUER)).await, "change"));
    let (uid, token) = reset_link(&reset_mail, DEFAULT_ISSUER);
    expired(assert_refused(accounts.reset_password(reset_request(&token, NEW_PASSWORD, &uid)).await, "reset"));
    login(&mut service.auth(), "oli", PASSWORD).await.expect("the password is unchanged");
}

#[tokio::test]
async fn a_password_change_or_a_reset_voids_every_other_link_of_the_user() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |_| {}).await;
    let (mut accounts, mut users) = (service.accounts(), service.users());

    // A password change: the verification, reset and email-change links all die.
    sign_up(&mut users, "pam").await;
    let login = log_in(&mut service.auth(), "pam").await;
    ask_email_change(&mut accounts, &login.access_token, "pam@new.example.com").await.unwrap();
    request_reset(&mut accounts, &email("pam")).await.unwrap();
    let verify_key_ = verify_key(&smtp.wait_for_subject(&email("pam"), VERIFY, ARRIVAL).await, DEFAULT_ISSUER);
    let change = change_key(&smtp.wait_for_subject("pam@new.example.com", CHANGE, ARRIVAL).await, DEFAULT_ISSUER);
    let (uid, token) = reset_link(&smtp.wait_for_subject(&email("pam"), RESET, ARRIVAL).await, DEFAULT_ISSUER);
    let request = pb::ChangePasswordRequest { current_password: PASSWORD.into(), new_password: NEW_PASSWORD.into() };
    users.change_password(bearer(request, &login.access_token)).await.unwrap();
    assert_refused(accounts.reset_password(reset_request(&token, "an attacker's choice", &uid)).await, "reset");
    assert_refused(verify(&mut accounts, &verify_key_).await, "verification");
    assert_refused(confirm(&mut accounts, &change).await, "email change");

    // A reset: the other links die with it.
    sign_up(&mut users, "quinn").await;
    let access = log_in(&mut service.auth(), "quinn").await.access_token;
    ask_email_change(&mut accounts, &access, "quinn@new.example.com").await.unwrap();
    request_reset(&mut accounts, &email("quinn")).await.unwrap();
    let verify_key_ = verify_key(&smtp.wait_for_subject(&email("quinn"), VERIFY, ARRIVAL).await, DEFAULT_ISSUER);
    let change = change_key(&smtp.wait_for_subject("quinn@new.example.com", CHANGE, ARRIVAL).await, DEFAULT_ISSUER);
    let (uid, token) = reset_link(&smtp.wait_for_subject(&email("quinn"), RESET, ARRIVAL).await, DEFAULT_ISSUER);
    accounts.reset_password(reset_request(&token, NEW_PASSWORD, &uid)).await.unwrap();
    assert_refused(confirm(&mut accounts, &change).await, "email change after a reset");
    assert_refused(verify(&mut accounts, &verify_key_).await, "verification after a reset");
}

#[tokio::test]
async fn a_reset_link_sent_to_the_old_address_is_refused_once_the_account_moved_to_a_new_one() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |_| {}).await;
    let mut accounts = service.accounts();
    sign_up(&mut service.users(), "ada").await;
    let access = log_in(&mut service.auth(), "ada").await.access_token;
    request_reset(&mut accounts, &email("ada")).await.unwrap();
    let (uid, token) = reset_link(&smtp.wait_for_subject(&email("ada"), RESET, ARRIVAL).await, DEFAULT_ISSUER);

    // Whoever reads the old mailbox (given up, recycled) must not take the account back.
    let new = "ada@new.example.com";
    ask_email_change(&mut accounts, &access, new).await.unwrap();
    confirm(&mut accounts, &change_key(&smtp.wait_for_subject(new, CHANGE, ARRIVAL).await, DEFAULT_ISSUER))
        .await
        .unwrap();
    let attempt = accounts.reset_password(reset_request(&token, "an attacker's choice", &uid)).await;
    assert_refused(attempt, "a reset link to the address the account left");
    login(&mut service.auth(), new, PASSWORD).await.expect("the password stays");
}

#[tokio::test]
async fn a_reset_link_is_refused_once_a_manager_sets_a_new_address_or_deactivates_the_account() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service =
        service(&db, &smtp, |config| config.bootstrap_manager = Some(Secret::new(format!("root:{PASSWORD}")))).await;
    let (mut accounts, mut users, mut auth) = (service.accounts(), service.users(), service.auth());
    let bob = sign_up(&mut users, "bob").await;
    let cy = sign_up(&mut users, "cy").await;
    let mut links = Vec::new();
    for name in ["bob", "cy"] {
        request_reset(&mut accounts, &email(name)).await.unwrap();
        links.push(reset_link(&smtp.wait_for_subject(&email(name), RESET, ARRIVAL).await, DEFAULT_ISSUER));
    }
    let root = log_in(&mut auth, "root").await.access_token;
    let attempt = |(uid, token): &(String, String)| reset_request(token, "an attacker's choice", uid);

    let moved = pb::User { email: "bob@new.example.com".into(), ..Default::default() };
    users.update_user(bearer(update_request(&bob.id, moved, &["email"]), &root)).await.unwrap();
    assert_refused(accounts.reset_password(attempt(&links[0])).await, "a link to the address a manager replaced");
    login(&mut auth, "bob", PASSWORD).await.expect("bob's password stays");

    let inactive = pb::User { is_active: false, ..Default::default() };
    users.update_user(bearer(update_request(&cy.id, inactive, &["is_active"]), &root)).await.unwrap();
    assert_refused(accounts.reset_password(attempt(&links[1])).await, "a link of a deactivated account");
    let active = pb::User { is_active: true, ..Default::default() };
    users.update_user(bearer(update_request(&cy.id, active, &["is_active"]), &root)).await.unwrap();
    login(&mut auth, "cy", PASSWORD).await.expect("cy's password stays");
}

/// Rounds of: a burst of reset links asked for, then a password change while the sender is
/// making those links, one after the other. The change starts a little later each round (a
/// sweep across the sender's work on one message, tens of milliseconds: some round should void
/// the queue just as the sender is between taking a message and making its link; the delays
/// are the sweep, not synchronisation). Every link was asked for before the change began: once
/// the outbox is empty, every link received must be refused.
#[tokio::test(flavor = "multi_thread")]
async fn reset_links_made_while_the_password_changes_never_outlive_the_change() {
    const ROUNDS: usize = 30;
    const BURST: usize = 6;
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |_| {}).await;
    let (mut accounts, mut users) = (service.accounts(), service.users());
    sign_up(&mut users, "kit").await;
    smtp.wait_for_subject(&email("kit"), VERIFY, ARRIVAL).await;
    let session = log_in(&mut service.auth(), "kit").await;
    let password =
        |round: usize| if round == 0 { PASSWORD.to_owned() } else { format!("the passphrase of round {round}") };

    let mut tried = 0;
    for round in 0..ROUNDS {
        let asked = burst(BURST, |_| {
            let mut accounts = service.accounts();
            async move { request_reset(&mut accounts, &email("kit")).await }
        })
        .await;
        assert!(asked.iter().all(Result::is_ok), "{asked:#?}");
        tokio::time::sleep(Duration::from_millis(5 * (round % 8) as u64)).await;
        let change = pb::ChangePasswordRequest { current_password: password(round), new_password: password(round + 1) };
        users.change_password(bearer(change, &session.access_token)).await.unwrap();

        drained(&db).await;
        let links: Vec<(String, String)> = smtp
            .to(&email("kit"))
            .iter()
            .filter(|mail| mail.subject == RESET)
            .map(|mail| reset_link(mail, DEFAULT_ISSUER))
            .collect();
        for (i, (uid, token)) in links.iter().enumerate().skip(tried) {
            let attempt = accounts.reset_password(reset_request(token, "an attacker's choice", uid)).await;
            assert_refused(attempt, &format!("round {round}: link {i}, asked for before the change"));
        }
        tried = links.len();
    }
    eprintln!(
        "{tried} of {} reset links asked for were sent around {ROUNDS} password changes; all refused",
        BURST * ROUNDS
    );
    login(&mut service.auth(), "kit", &password(ROUNDS)).await.expect("the last password stands");
}

// === Delivery ===

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_asked_while_the_smtp_server_is_down_answers_at_once_and_arrives_once_when_it_is_back() {
    let mut smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |_| {}).await;
    let mut accounts = service.accounts();
    let names = ["rae", "rob", "roy"];
    for name in names {
        sign_up(&mut service.users(), name).await;
        smtp.wait_for_subject(&email(name), VERIFY, ARRIVAL).await;
    }
    let started = Instant::now();
    request_reset(&mut accounts, &email("rae")).await.unwrap();
    let up = started.elapsed();
    smtp.wait_for_subject(&email("rae"), RESET, ARRIVAL).await;

    smtp.stop().await;
    let started = Instant::now();
    request_reset(&mut accounts, &email("rae")).await.unwrap();
    let down = started.elapsed();
    // And a burst during the outage.
    let answers = burst(2, |i| {
        let mut accounts = service.accounts();
        async move { request_reset(&mut accounts, &email(names[i + 1])).await }
    })
    .await;
    assert!(answers.iter().all(Result::is_ok), "{answers:#?}");
    eprintln!("RequestPasswordReset: {:.1} ms with the SMTP server up, {:.1} ms with it down", ms(up), ms(down));

    // The sender did try during the outage (and failed), more than once.
    let store = db.connect().await;
    let retried = "SELECT COUNT(*) FROM outbox WHERE kind = 'reset' AND sent_at IS NULL AND attempts >= 2";
    eventually(ARRIVAL, || {
        let store = &store;
        async move { (count(store, retried).await >= 3).then_some(()) }
    })
    .await;
    smtp.restart().await;
    let outage_end = Instant::now();
    for name in names {
        smtp.wait_for_all(&email(name), Some(RESET), if name == "rae" { 2 } else { 1 }, ARRIVAL).await;
    }
    eprintln!(
        "mail queued during the outage arrived {:.1} ms after the SMTP server came back",
        ms(outage_end.elapsed())
    );
    assert_eq!(
        count_after_a_while(&smtp, &email("rae"), RESET).await,
        2,
        "one reset sent before the outage, one during"
    );
    for name in names {
        let expected = if name == "rae" { 2 } else { 1 };
        assert_eq!(smtp.to(&email(name)).iter().filter(|mail| mail.subject == RESET).count(), expected, "{name}");
        assert_eq!(smtp.to(&email(name)).iter().filter(|mail| mail.subject == VERIFY).count(), 1, "{name}");
    }
}

#[tokio::test]
async fn a_reset_link_still_queued_when_the_password_changes_is_never_sent() {
    let mut smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |config| config.public_url = Some(PUBLIC.into())).await;
    let (mut accounts, mut users) = (service.accounts(), service.users());
    sign_up(&mut users, "quin").await;
    smtp.wait_for_subject(&email("quin"), VERIFY, ARRIVAL).await;
    let session = login(&mut service.auth(), "quin", PASSWORD).await.unwrap();

    // Asked for during an outage (by the address, in another case), then the password changes.
    smtp.stop().await;
    request_reset(&mut accounts, &email("QUIN")).await.unwrap();
    let change =
        pb::ChangePasswordRequest { current_password: PASSWORD.into(), new_password: "a new one, changed".into() };
    users.change_password(bearer(change, &session.access_token)).await.unwrap();
    smtp.restart().await;

    // A reset asked for after the change arrives; the one asked for before never does.
    request_reset(&mut accounts, &email("quin")).await.unwrap();
    let fresh = smtp.wait_for_subject(&email("quin"), RESET, ARRIVAL).await;
    let (uid, token) = reset_link(&fresh, PUBLIC);
    assert!(!uid.is_empty() && !token.is_empty());
    assert_eq!(count_after_a_while(&smtp, &email("quin"), RESET).await, 1, "the voided link was sent");
}

#[tokio::test]
async fn the_metrics_show_mail_waiting_while_the_smtp_server_is_down_and_leaving_once_it_is_back() {
    let mut smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let metrics = free_address();
    let service = service(&db, &smtp, |config| config.metrics_addr = Some(metrics)).await;
    let mut accounts = service.accounts();
    sign_up(&mut service.users(), "mia").await;
    smtp.wait_for_subject(&email("mia"), VERIFY, ARRIVAL).await;

    smtp.stop().await;
    request_reset(&mut accounts, &email("mia")).await.unwrap();
    request_reset(&mut accounts, &email("nobody")).await.unwrap();
    let reset = |outcome: &str| format!("identity_mail_attempts_total{{kind=\"reset\",outcome=\"{outcome}\"}}");
    // The known address's mail waits and is retried; the unknown one's is dropped unsent.
    let failed = reset("failed");
    let waiting = eventually(ARRIVAL, || {
        let failed = failed.clone();
        async move {
            let text = scrape(metrics).await;
            let depth = sample(&text, "identity_mail_outbox_depth");
            (depth == Some(1.0) && sample(&text, &failed).unwrap_or(0.0) >= 2.0).then_some(text)
        }
    })
    .await;
    assert_eq!(sample(&waiting, "identity_mail_queued_total{kind=\"reset\"}"), Some(2.0), "{waiting}");
    assert_eq!(sample(&waiting, &reset("skipped")), Some(1.0), "{waiting}");
    assert_eq!(sample(&waiting, &reset("sent")), None, "{waiting}");
    let oldest = sample(&waiting, "identity_mail_outbox_oldest_age_seconds").unwrap();
    assert!(oldest > 0.0, "{waiting}");

    smtp.restart().await;
    smtp.wait_for_subject(&email("mia"), RESET, ARRIVAL).await;
    let left = eventually(ARRIVAL, || async move {
        let text = scrape(metrics).await;
        (sample(&text, "identity_mail_outbox_depth") == Some(0.0)).then_some(text)
    })
    .await;
    assert_eq!(sample(&left, &reset("sent")), Some(1.0), "{left}");
    assert_eq!(sample(&left, "identity_mail_outbox_oldest_age_seconds"), Some(0.0), "{left}");
    assert_eq!(sample(&left, "identity_mail_attempts_total{kind=\"verify\",outcome=\"sent\"}"), Some(1.0), "{left}");
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[tokio::test]
async fn the_smtp_server_is_reached_with_the_credentials_of_the_url() {
    let smtp = SmtpServer::start_with_auth("mailer", "s3cret pass").await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |_| {}).await;
    sign_up(&mut service.users(), "sal").await;
    let mail = smtp.wait_for_subject(&email("sal"), VERIFY, ARRIVAL).await;
    assert_eq!(mail.auth_user.as_deref(), Some("mailer"));
}

#[tokio::test]
async fn mail_goes_over_starttls_and_smtps_to_a_server_under_a_private_ca_with_credentials_only_inside_tls() {
    let pki = Pki::new();
    for (mode, name) in [(TlsMode::StartTls, "stella"), (TlsMode::Smtps, "sam")] {
        // The server refuses AUTH outside TLS, and STARTTLS mode refuses everything before it.
        let smtp = SmtpServer::start_tls(&pki, mode, "mailer", "tls pass").await;
        let db = TestDb::new().await;
        let service = service(&db, &smtp, |config| config.smtp_ca = Some(pki.ca.clone())).await;
        sign_up(&mut service.users(), name).await;
        let mail = smtp.wait_for_subject(&email(name), VERIFY, ARRIVAL).await;
        assert!(mail.tls, "{mode:?}: over TLS");
        assert_eq!(mail.auth_user.as_deref(), Some("mailer"), "{mode:?}");
        assert!(verify_key(&mail, DEFAULT_ISSUER).len() >= 40, "{mode:?}: the link came whole");
    }
}

#[tokio::test]
async fn a_mail_server_whose_certificate_is_not_trusted_gets_nothing_not_even_in_plaintext() {
    // The test CA is not among the system's roots, and IDENTITY_SMTP_CA is not set.
    let pki = Pki::new();
    let smtp = SmtpServer::start_tls(&pki, TlsMode::StartTls, "mailer", "tls pass").await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |_| {}).await;
    sign_up(&mut service.users(), "una").await;
    let store = db.connect().await;
    let retried = "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL AND attempts >= 3";
    count_reaches(&store, retried, 1, ARRIVAL).await;
    assert_eq!(smtp.messages().len(), 0, "nothing delivered to a server the service cannot authenticate");
}

#[tokio::test]
async fn a_message_undelivered_past_the_give_up_time_is_abandoned_and_never_sent_later() {
    let mut smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |config| config.mail_give_up = secs(2)).await;
    smtp.stop().await;
    // A burst of sign-ups during the outage: every message is queued, none can leave.
    let names = ["gus", "gia", "gil", "gwen", "gabe"];
    burst(names.len(), |i| {
        let mut users = service.users();
        async move { sign_up(&mut users, names[i]).await }
    })
    .await;
    let store = db.connect().await;
    let abandoned = "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NOT NULL AND attempts >= 2";
    count_reaches(&store, abandoned, names.len() as i64, ARRIVAL).await;
    smtp.restart().await;
    // A message queued now still goes: the sender is alive, only the old ones were dropped.
    sign_up(&mut service.users(), "hal").await;
    smtp.wait_for_subject(&email("hal"), VERIFY, ARRIVAL).await;
    assert_eq!(count_after_a_while(&smtp, &email(names[0]), VERIFY).await, 0);
    for name in names {
        assert_eq!(subjects(&smtp, &email(name)), Vec::<String>::new(), "{name}'s message was abandoned");
    }
}

#[tokio::test]
async fn without_an_smtp_server_a_sign_up_is_written_as_an_eml_file_with_its_link() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    let tom = sign_up(&mut service.users(), "tom").await;
    let dir = db.outbox_dir();
    let mail = eventually(ARRIVAL, || {
        let dir = dir.clone();
        async move { outbox(&dir).pop() }
    })
    .await;
    assert_eq!(mail.subject, VERIFY);
    assert_eq!(mail.to, ["tom@example.com"], "{:?}", mail.headers);
    let key = verify_key(&mail, DEFAULT_ISSUER);
    let user = verify(&mut service.accounts(), &key).await.unwrap().into_inner().user.unwrap();
    assert_eq!((user.id, user.email_verified), (tom.id, true));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_through_one_replica_ends_every_session_another_replica_holds_in_its_cache() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    if !db.is_postgres() {
        return;
    }
    // Caches that outlive the test: only the event bus can explain a refusal on B. (Logins in
    // flight hold their place in the login budget: ten at once need more than five.)
    let replica = |config: &mut identity_service::Config| {
        config.session_cache_ttl = secs(60);
        config.login_max_failures = 100;
    };
    let (a, b) = (service(&db, &smtp, replica).await, service(&db, &smtp, replica).await);
    let rex = sign_up(&mut a.users(), "rex").await;
    // Ten sessions opened on B at once, each used there (and so cached) before the reset.
    let logins = burst(10, |_| {
        let mut auth = b.auth();
        async move { log_in(&mut auth, "rex").await }
    })
    .await;
    for login in &logins {
        b.auth().authenticate(access(&login.access_token)).await.unwrap();
    }
    request_reset(&mut a.accounts(), &email("rex")).await.unwrap();
    let mail = smtp.wait_for_subject(&email("rex"), RESET, ARRIVAL).await;
    let (uid, token) = reset_link(&mail, DEFAULT_ISSUER);
    let done = a.accounts().reset_password(reset_request(&token, NEW_PASSWORD, &uid)).await.unwrap().into_inner();
    assert_eq!((uid, done.revoked_sessions), (rex.id, 10));
    for login in &logins {
        eventually(Duration::from_secs(5), || {
            let mut auth = b.auth();
            let token = login.access_token.clone();
            async move { auth.authenticate(access(&token)).await.is_err().then_some(()) }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_database_send_each_message_once() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        return;
    }
    let smtp = SmtpServer::start().await;
    let replicas = [service(&db, &smtp, |_| {}).await, service(&db, &smtp, |_| {}).await];
    let names: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    // Each replica queues half the sign-ups, at once, then half the resets.
    let signed = burst(names.len(), |i| {
        let (mut users, name) = (replicas[i % 2].users(), names[i].clone());
        async move { sign_up(&mut users, &name).await }
    })
    .await;
    assert_eq!(signed.len(), names.len());
    let asked = burst(names.len(), |i| {
        let (mut accounts, address) = (replicas[(i + 1) % 2].accounts(), email(&names[i]));
        async move { request_reset(&mut accounts, &address).await }
    })
    .await;
    assert!(asked.iter().all(Result::is_ok), "{asked:#?}");
    for name in &names {
        smtp.wait_for_subject(&email(name), VERIFY, ARRIVAL).await;
        smtp.wait_for_subject(&email(name), RESET, ARRIVAL).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let messages = smtp.messages();
    assert_eq!(messages.len(), 2 * names.len(), "each message once");
    for name in &names {
        let subjects: Vec<&str> =
            messages.iter().filter(|m| m.is_to(&email(name))).map(|m| m.subject.as_str()).collect();
        assert_eq!(subjects.len(), 2, "{name}: {subjects:?}");
    }
}

// === Sessions ===

const EVENTS: &str = "subscription { sessionEvents { kind sessionId reason } }";

#[tokio::test]
async fn a_reset_ends_every_session_of_the_user_and_their_websockets_close_with_4401() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |_| {}).await;
    let base = stack.facade.base();
    sign_up(&mut stack.identity.users(), "uma").await;
    let phone = log_in(&mut stack.identity.auth(), "uma").await;
    let laptop = log_in(&mut stack.identity.auth(), "uma").await;
    let mut browser = Browser::new(&stack.facade);
    browser.log_in("uma", PASSWORD).await;

    let mut socket = WsClient::connect(&stack.facade, "graphql-transport-ws", None).await;
    let Frame::Json(ack) = socket.init(json!({"sessionToken": phone.session_token})).await else { panic!("no ack") };
    assert_eq!(ack["type"], "connection_ack");
    socket.subscribe("events", EVENTS).await;
    // A query answered after the subscription means the subscription is registered.
    socket.send(json!({"id": "q", "type": "subscribe", "payload": {"query": "{ __typename }"}})).await;
    for _ in 0..2 {
        assert!(matches!(socket.next().await, Frame::Json(_)));
    }

    request_reset(&mut stack.identity.accounts(), &email("uma")).await.unwrap();
    let (uid, token) = reset_link(&smtp.wait_for_subject(&email("uma"), RESET, ARRIVAL).await, &base);
    let mut stranger = Browser::new(&stack.facade);
    stranger.get("/api/csrf").await;
    let confirm = json!({"uid": uid, "token": token, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD});
    let (status, _, body) = stranger.post("/api/password/reset/confirm/", confirm, true).await;
    assert_eq!(status, 200, "{body}");

    match socket.next().await {
        Frame::Json(event) => {
            assert_eq!(event["payload"]["data"]["sessionEvents"]["kind"], "REVOKED", "{event}");
            assert_eq!(event["payload"]["data"]["sessionEvents"]["sessionId"], phone.session_id.as_str());
        }
        Frame::Closed(code, reason) => panic!("closed {code} {reason} before the event"),
    }
    match socket.next().await {
        Frame::Closed(code, reason) => assert_eq!(code, 4401, "{reason}"),
        Frame::Json(value) => panic!("expected close 4401, got {value}"),
    }
    for login in [&phone, &laptop] {
        let status = stack.identity.auth().authenticate(access(&login.access_token)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let (status, _, _) = browser.get("/api/me").await;
    assert_eq!(status, 401, "the browser's cookie session too");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_racing_logins_with_the_old_password_leaves_none_of_their_sessions_alive() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    // Failed logins (the old password, once reset) must not lock the racers out early.
    let service = service(&db, &smtp, |config| config.login_max_failures = 1000).await;
    sign_up(&mut service.users(), "ray").await;
    request_reset(&mut service.accounts(), &email("ray")).await.unwrap();
    let (uid, token) = reset_link(&smtp.wait_for_subject(&email("ray"), RESET, ARRIVAL).await, DEFAULT_ISSUER);

    // Four clients log in with the old password over and over while the reset happens.
    let reset_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let (mut auth, reset_done) = (service.auth(), reset_done.clone());
            tokio::spawn(async move {
                let mut sessions = Vec::new();
                while !reset_done.load(std::sync::atomic::Ordering::SeqCst) {
                    if let Ok(login) = login(&mut auth, "ray", PASSWORD).await {
                        sessions.push(login);
                    }
                }
                sessions
            })
        })
        .collect();
    // Once the racers are logging in, the reset.
    eventually(ARRIVAL, || {
        let store = db.connect();
        async move { (count(&store.await, "SELECT COUNT(*) FROM sessions").await >= 4).then_some(()) }
    })
    .await;
    let done = service.accounts().reset_password(reset_request(&token, NEW_PASSWORD, &uid)).await.unwrap();
    reset_done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut sessions = Vec::new();
    for racer in racers {
        sessions.extend(racer.await.unwrap());
    }
    eprintln!(
        "{} logins with the old password; the reset revoked {}",
        sessions.len(),
        done.into_inner().revoked_sessions
    );

    let mut alive = Vec::new();
    for session in &sessions {
        if service.auth().authenticate(session_token(&session.session_token)).await.is_ok() {
            alive.push(session.session_id.clone());
        }
    }
    assert!(alive.is_empty(), "sessions opened with the old password outlived the reset: {alive:?}");
}

// === No enumeration, no poisoning, throttling ===

#[tokio::test]
async fn reset_and_resend_answer_alike_for_known_and_unknown_addresses() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |_| {}).await;
    sign_up(&mut stack.identity.users(), "val").await;
    let (known, unknown) = (email("val"), email("nobody"));
    let mut accounts = stack.identity.accounts();

    // gRPC: the same answer.
    let answers = [request_reset(&mut accounts, &known).await, request_reset(&mut accounts, &unknown).await];
    assert!(answers.iter().all(Result::is_ok), "{answers:#?}");
    let answers = [resend(&mut accounts, &known).await, resend(&mut accounts, &unknown).await];
    assert!(answers.iter().all(Result::is_ok), "{answers:#?}");
    // GraphQL: the same body.
    let gql = stack.client();
    for mutation in [SEND_RESET, RESEND] {
        let bodies =
            [gql.anonymous(mutation, json!({"e": known})).await, gql.anonymous(mutation, json!({"e": unknown})).await];
        assert_eq!(bodies[0], bodies[1]);
        assert!(bodies[0]["errors"].is_null(), "{}", bodies[0]);
    }

    // REST: the same status and body, in about the same time (timed, printed, not asserted).
    let mut browser = Browser::new(&stack.facade);
    browser.get("/api/csrf").await;
    for (path, label) in [("/api/password/reset/", "reset"), ("/api/registration/resend-email/", "resend")] {
        let mut times = [Vec::new(), Vec::new()];
        let mut answers = [None, None];
        for _ in 0..50 {
            for (which, address) in [&known, &unknown].into_iter().enumerate() {
                let started = Instant::now();
                let (status, headers, body) = browser.post(path, json!({"email": address}), true).await;
                times[which].push(started.elapsed());
                let content_type = headers.get("content-type").map(|value| value.to_str().unwrap().to_owned());
                let answer = (status, content_type, body);
                assert_eq!(answers[which].get_or_insert_with(|| answer.clone()), &answer, "{label}: always the same");
            }
        }
        assert_eq!(answers[0], answers[1], "{label}: known and unknown addresses answer alike");
        assert_eq!(answers[0].as_ref().unwrap().0, 200);
        let [known_times, unknown_times] = times;
        let (known_median, known_p90) = median_p90(known_times);
        let (unknown_median, unknown_p90) = median_p90(unknown_times);
        eprintln!(
            "POST {path} x50 each: known address median {known_median:.2} ms p90 {known_p90:.2} ms; \
             unknown address median {unknown_median:.2} ms p90 {unknown_p90:.2} ms"
        );
    }
    // The known address got its mail; nothing ever went to the unknown one.
    smtp.wait_for_subject(&known, RESET, ARRIVAL).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(smtp.to(&unknown).is_empty(), "mail went to an address without an account");
}

#[tokio::test]
async fn a_reset_asked_with_a_forged_host_still_links_to_the_public_url() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |config| config.public_url = Some(PUBLIC.into())).await;
    sign_up(&mut stack.identity.users(), "wes").await;
    let mut browser = Browser::new(&stack.facade);
    browser.get("/api/csrf").await;
    let request = browser
        .http
        .post(format!("{}/api/password/reset/", browser.base))
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "host=evil.example;proto=https")
        .header("x-csrftoken", browser.csrf())
        .json(&json!({"email": email("wes")}));
    let (status, _, body) = browser.send(request).await;
    assert_eq!(status, 200, "{body}");
    let mail = smtp.wait_for_subject(&email("wes"), RESET, ARRIVAL).await;
    let (uid, _) = reset_link(&mail, PUBLIC);
    assert!(!uid.is_empty());
    assert!(!mail.raw.contains("evil.example"), "{}", mail.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_for_one_address_is_throttled_alike_whether_or_not_it_has_an_account() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |config| config.mail_address_limit = 3).await;
    sign_up(&mut stack.identity.users(), "xia").await;

    for address in [email("xia"), email("nobody")] {
        let answers = burst(10, |_| {
            let (mut accounts, address) = (stack.identity.accounts(), address.clone());
            async move { request_reset(&mut accounts, &address).await }
        })
        .await;
        let passed = answers.iter().filter(|answer| answer.is_ok()).count();
        assert_eq!(passed, 3, "{address}: {answers:#?}");
        for status in answers.into_iter().filter_map(Result::err) {
            assert_eq!(status.code(), Code::ResourceExhausted, "{address}: {status:?}");
            let retry = status.get_details_retry_info().expect("RetryInfo").retry_delay.expect("a delay");
            assert!(retry >= Duration::from_secs(1), "{retry:?}");
        }
        // Resend counts on the same address.
        let status = resend(&mut stack.identity.accounts(), &address).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
    }

    // Over REST: 429 with Retry-After, for a known and an unknown address alike.
    for address in [email("yan"), email("nobody-else")] {
        if address == email("yan") {
            sign_up(&mut stack.identity.users(), "yan").await;
        }
        let answers = burst(10, |_| {
            let mut browser = Browser::new(&stack.facade);
            let address = address.clone();
            async move {
                browser.get("/api/csrf").await;
                let (status, headers, body) =
                    browser.post("/api/password/reset/", json!({"email": address}), true).await;
                (status, headers.get("retry-after").map(|value| value.to_str().unwrap().to_owned()), body)
            }
        })
        .await;
        let statuses: Vec<u16> = answers.iter().map(|(status, _, _)| *status).collect();
        assert_eq!(statuses.iter().filter(|&&status| status == 200).count(), 3, "{address}: {answers:?}");
        assert_eq!(statuses.iter().filter(|&&status| status == 429).count(), 7, "{address}: {answers:?}");
        for (_, retry_after, body) in answers.iter().filter(|(status, _, _)| *status == 429) {
            assert!(retry_after.as_deref().is_some_and(|seconds| seconds.parse::<u64>().unwrap() >= 1), "{answers:?}");
            assert!(body["detail"].is_string(), "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_from_one_client_is_throttled_whatever_the_addresses() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |config| config.mail_client_limit = 5).await;
    let answers = burst(10, |i| {
        let mut accounts = service.accounts();
        let request =
            from_address(pb::RequestPasswordResetRequest { email: format!("someone{i}@example.com") }, "203.0.113.7");
        async move { accounts.request_password_reset(request).await }
    })
    .await;
    assert_eq!(answers.iter().filter(|answer| answer.is_ok()).count(), 5, "{answers:#?}");
    assert!(
        answers
            .iter()
            .filter_map(|answer| answer.as_ref().err())
            .all(|status| status.code() == Code::ResourceExhausted)
    );
    // Another client is not held back by this one.
    let request = from_address(pb::RequestPasswordResetRequest { email: "someone@example.com".into() }, "203.0.113.8");
    service.accounts().request_password_reset(request).await.expect("another client");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_for_someones_address_from_one_network_does_not_keep_their_reset_link_from_them() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |config| config.mail_address_limit = 3).await;
    sign_up(&mut service.users(), "vic").await;
    let ask = |client: &'static str| {
        let mut accounts = service.accounts();
        let request = from_address(pb::RequestPasswordResetRequest { email: email("vic") }, client);
        async move { accounts.request_password_reset(request).await }
    };

    let answers = burst(10, |_| ask("192.0.2.1")).await;
    assert_eq!(answers.iter().filter(|answer| answer.is_ok()).count(), 3, "{answers:#?}");
    for status in answers.iter().filter_map(|answer| answer.as_ref().err()) {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    // Vic, elsewhere, still gets a link: the last message queued, so the last to arrive.
    ask("198.51.100.7").await.expect("the victim's own request");
    let mails = smtp.wait_for_all(&email("vic"), Some(RESET), 4, ARRIVAL).await;
    drained(&db).await;
    assert_eq!(smtp.to(&email("vic")).iter().filter(|mail| mail.subject == RESET).count(), 4, "3 + 1 links");
    let (uid, token) = reset_link(&mails[3], DEFAULT_ISSUER);
    service.accounts().reset_password(reset_request(&token, NEW_PASSWORD, &uid)).await.expect("the victim's link");
}

#[tokio::test]
async fn ipv6_clients_of_one_slash_64_share_a_mail_budget_and_another_slash_64_has_its_own() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let service = service(&db, &smtp, |config| config.mail_client_limit = 2).await;
    let ask = |client: &'static str, i: usize| {
        let mut accounts = service.accounts();
        let request =
            from_address(pb::RequestPasswordResetRequest { email: format!("someone{i}@example.com") }, client);
        async move { accounts.request_password_reset(request).await }
    };
    ask("2001:db8::1", 1).await.expect("the network's first request");
    ask("2001:db8::2", 2).await.expect("the network's second request, from another host");
    let status = ask("2001:db8::ffff:3", 3).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "a third host of the /64: {status:?}");
    let status = ask("2001:db8::1", 4).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "the first host again: {status:?}");
    ask("2001:db8:0:1::1", 5).await.expect("the next /64 has its own budget");
}

/// Both limits share one window, each counter's starting at its first request: a counter
/// started later runs on after the other's ended, which is how this shows what was counted.
#[tokio::test]
async fn a_request_the_client_limit_refuses_takes_nothing_from_the_address_budget() {
    let smtp = SmtpServer::start().await;
    let db = TestDb::new().await;
    let window = Duration::from_secs(3);
    let service = service(&db, &smtp, |config| {
        config.mail_client_limit = 1;
        config.mail_address_limit = 2;
        config.mail_limit_window = window.into();
    })
    .await;
    sign_up(&mut service.users(), "ula").await;
    let ask = |address: String| {
        let mut accounts = service.accounts();
        let request = from_address(pb::RequestPasswordResetRequest { email: address }, "203.0.113.9");
        async move { accounts.request_password_reset(request).await }
    };

    ask(email("someone")).await.expect("the client's one request");
    let client_window_over = tokio::time::Instant::now() + window;
    // Halfway through the client's window: more requests for ula than her address allows.
    // (Waiting out a window is the behaviour under test, not synchronisation.)
    tokio::time::sleep(window / 2).await;
    for (i, answer) in burst(5, |_| ask(email("ula"))).await.into_iter().enumerate() {
        assert_eq!(answer.unwrap_err().code(), Code::ResourceExhausted, "request {i}");
    }
    // The client's window is over; an address counter started by those would run on.
    tokio::time::sleep_until(client_window_over + Duration::from_millis(200)).await;
    ask(email("ula")).await.expect("ula's address budget is whole");
    smtp.wait_for_subject(&email("ula"), RESET, ARRIVAL).await;
}

// === The link pages ===

#[tokio::test(flavor = "multi_thread")]
async fn opening_a_link_page_any_number_of_times_uses_nothing_until_its_button_is_pressed() {
    let smtp = SmtpServer::start().await;
    let stack = stack(&smtp, |_| {}).await;
    let base = stack.facade.base();
    let zoe = sign_up(&mut stack.identity.users(), "zoe").await;
    let login = log_in(&mut stack.identity.auth(), "zoe").await;
    ask_email_change(&mut stack.identity.accounts(), &login.access_token, "zoe@new.example.com").await.unwrap();
    // Another user's reset link: following zoe's email-change link voids her others.
    sign_up(&mut stack.identity.users(), "zed").await;
    request_reset(&mut stack.identity.accounts(), &email("zed")).await.unwrap();
    let verify_mail = smtp.wait_for_subject(&email("zoe"), VERIFY, ARRIVAL).await;
    let change_mail = smtp.wait_for_subject("zoe@new.example.com", CHANGE, ARRIVAL).await;
    let reset_mail = smtp.wait_for_subject(&email("zed"), RESET, ARRIVAL).await;
    let links = [
        verify_mail.link(&format!("{base}/account/verify-email?key=")),
        change_mail.link(&format!("{base}/account/confirm-email?key=")),
        reset_mail.link(&format!("{base}/account/reset-password?uid=")),
    ];

    // Mail scanners and link previews: ten simultaneous GETs of each link.
    let http = reqwest::Client::new();
    for link in &links {
        let pages = burst(10, |_| {
            let (http, link) = (http.clone(), link.clone());
            async move {
                let response = http.get(&link).send().await.unwrap();
                let content_type =
                    response.headers().get("content-type").map(|value| value.to_str().unwrap().to_owned());
                (response.status().as_u16(), content_type)
            }
        })
        .await;
        for (status, content_type) in pages {
            assert_eq!(status, 200, "{link}");
            assert!(content_type.is_some_and(|value| value.starts_with("text/html")), "{link}");
        }
    }
    let user = get_user(&mut stack.identity.users(), &login.access_token, &zoe.id).await;
    assert_eq!((user.email.as_str(), user.email_verified), ("zoe@example.com", false), "a GET changed the account");

    // Every link still works once its page's button is pressed.
    let mut accounts = stack.identity.accounts();
    verify(&mut accounts, &verify_key(&verify_mail, &base)).await.expect("the verification link");
    confirm(&mut accounts, &change_key(&change_mail, &base)).await.expect("the email-change link");
    let (uid, token) = reset_link(&reset_mail, &base);
    accounts.reset_password(reset_request(&token, NEW_PASSWORD, &uid)).await.expect("the reset link");
}
