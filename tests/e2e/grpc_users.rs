//! `identity.v1.UserService`.

use e2e::*;
use identity_core::Secret;
use identity_proto::pb;
use sea_orm::{ConnectionTrait, Statement};
use tonic::Code;
use tonic_types::StatusExt;

async fn manager_service(db: &TestDb) -> Service {
    let mut config = config(db);
    config.bootstrap_manager = Some(Secret::new(format!("root:{PASSWORD}")));
    Service::start(config).await
}

#[tokio::test]
async fn sign_up_returns_the_user_and_no_password_material() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    let user = sign_up(&mut service.users(), "Alice").await;
    assert_eq!(user.username, "Alice");
    assert_eq!(user.email, "Alice@example.com");
    assert_eq!(user.role, "user");
    assert!(user.is_active);
    assert!(user.date_joined.is_some());
    assert!(user.last_login.is_none());
    assert!(uuid::Uuid::parse_str(&user.id).is_ok());
    let debug = format!("{user:?}");
    assert!(!debug.contains(PASSWORD) && !debug.contains("argon2"));
}

#[tokio::test]
async fn sign_up_rejects_bad_fields_with_field_violations() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    let cases = [
        ("", "a@example.com", PASSWORD, "username"),
        ("bad name", "a@example.com", PASSWORD, "username"),
        ("bob", "not-an-email", PASSWORD, "email"),
        ("bob", "bob@example.com", "short", "password"),
        ("bob", "bob@example.com", "1234567890", "password"),
    ];
    for (username, email, password, field) in cases {
        let status = service
            .users()
            .create_user(pb::CreateUserRequest {
                username: username.into(),
                email: email.into(),
                password: password.into(),
                role: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{username:?} {email:?}");
        let violations = status.get_details_bad_request().expect("a BadRequest detail").field_violations;
        assert_eq!(violations[0].field, field);
    }
    let bad_role = pb::CreateUserRequest {
        username: "bob".into(),
        email: "bob@example.com".into(),
        password: PASSWORD.into(),
        role: "admin".into(),
    };
    assert_eq!(service.users().create_user(bad_role).await.unwrap_err().code(), Code::InvalidArgument);
    // Every bad field is reported at once.
    let all_bad = pb::CreateUserRequest {
        username: "bad name".into(),
        email: "nope".into(),
        password: "short".into(),
        role: "admin".into(),
    };
    let status = service.users().create_user(all_bad).await.unwrap_err();
    let fields: Vec<_> =
        status.get_details_bad_request().unwrap().field_violations.into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["username", "email", "password", "role"]);
    // Nothing was created by the refused requests.
    sign_up(&mut service.users(), "bob").await;
}

#[tokio::test]
async fn taken_usernames_and_emails_are_already_exists_whatever_their_case() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "carol").await;
    for (username, email) in [("CAROL", "other@example.com"), ("carol2", "Carol@Example.com")] {
        let status = service
            .users()
            .create_user(pb::CreateUserRequest {
                username: username.into(),
                email: email.into(),
                password: PASSWORD.into(),
                role: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists, "{username} {email}");
    }
}

#[tokio::test]
async fn fifty_concurrent_sign_ups_of_one_username_give_exactly_one_user() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    let attempts = (0..50).map(|i| {
        let mut users = service.users();
        async move {
            users
                .create_user(pb::CreateUserRequest {
                    username: "dave".into(),
                    email: format!("dave{i}@example.com"),
                    password: PASSWORD.into(),
                    role: String::new(),
                })
                .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let created = results.iter().filter(|result| result.is_ok()).count();
    let taken = results.iter().filter(|result| matches!(result, Err(s) if s.code() == Code::AlreadyExists)).count();
    assert_eq!((created, taken), (1, 49), "{:?}", results.iter().filter_map(|r| r.as_ref().err()).next());
    let login = log_in(&mut service.auth(), "dave").await;
    assert_eq!(login.user.unwrap().username, "dave");
}

#[tokio::test]
async fn only_a_manager_creates_other_managers() {
    let db = TestDb::new().await;
    let service = manager_service(&db).await;
    let new_manager = |name: &str| pb::CreateUserRequest {
        username: name.into(),
        email: format!("{name}@example.com"),
        password: PASSWORD.into(),
        role: "manager".into(),
    };
    let status = service.users().create_user(new_manager("eve")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    sign_up(&mut service.users(), "frank").await;
    let frank = log_in(&mut service.auth(), "frank").await;
    let status = service.users().create_user(bearer(new_manager("eve"), &frank.access_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let root = log_in(&mut service.auth(), "root").await;
    assert_eq!(root.user.unwrap().role, "manager");
    let eve = service.users().create_user(bearer(new_manager("eve"), &root.access_token)).await.unwrap().into_inner();
    assert_eq!(eve.user.unwrap().role, "manager");
}

#[tokio::test]
async fn a_dead_token_does_not_block_sign_up() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    let request = bearer(
        pb::CreateUserRequest {
            username: "gina".into(),
            email: "gina@example.com".into(),
            password: PASSWORD.into(),
            role: String::new(),
        },
        "not.a.token",
    );
    assert_eq!(service.users().create_user(request).await.unwrap().into_inner().user.unwrap().username, "gina");
}

#[tokio::test]
async fn users_read_themselves_and_managers_read_anyone() {
    let db = TestDb::new().await;
    let service = manager_service(&db).await;
    let (mut users, mut auth) = (service.users(), service.auth());
    let hank = sign_up(&mut users, "hank").await;
    let ida = sign_up(&mut users, "ida").await;
    let hank_login = log_in(&mut auth, "hank").await;

    let get = |id: &str| pb::GetUserRequest { id: id.into() };
    let own = users.get_user(bearer(get(&hank.id), &hank_login.access_token)).await.unwrap().into_inner();
    assert_eq!(own.user.unwrap().username, "hank");
    let status = users.get_user(bearer(get(&ida.id), &hank_login.access_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(users.get_user(get(&hank.id)).await.unwrap_err().code(), Code::Unauthenticated);

    let root = log_in(&mut auth, "root").await;
    let other = users.get_user(bearer(get(&ida.id), &root.access_token)).await.unwrap().into_inner();
    assert_eq!(other.user.unwrap().username, "ida");
    let status = users.get_user(bearer(get(&uuid::Uuid::now_v7().to_string()), &root.access_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn managers_page_through_users_with_tokens() {
    let db = TestDb::new().await;
    let service = manager_service(&db).await;
    let (mut users, mut auth) = (service.users(), service.auth());
    for name in ["u1", "u2", "u3", "u4"] {
        sign_up(&mut users, name).await;
    }
    let root = log_in(&mut auth, "root").await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = users
            .list_users(bearer(pb::ListUsersRequest { page_size: 2, page_token: token.clone() }, &root.access_token))
            .await
            .unwrap()
            .into_inner();
        assert!(page.users.len() <= 2);
        seen.extend(page.users.into_iter().map(|user| user.username));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["root", "u1", "u2", "u3", "u4"]);

    let bad = bearer(pb::ListUsersRequest { page_size: 2, page_token: "garbage".into() }, &root.access_token);
    let status = users.list_users(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "page_token");

    let u1 = log_in(&mut auth, "u1").await;
    let status = users.list_users(bearer(pb::ListUsersRequest::default(), &u1.access_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

fn update(id: &str, user: pb::User, paths: &[&str]) -> pb::UpdateUserRequest {
    pb::UpdateUserRequest {
        user: Some(pb::User { id: id.into(), ..user }),
        update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() }),
    }
}

#[tokio::test]
async fn only_managers_change_roles_or_set_an_email_and_users_change_theirs_with_their_password_elsewhere() {
    let db = TestDb::new().await;
    let service = manager_service(&db).await;
    let (mut users, mut auth) = (service.users(), service.auth());
    let jill = sign_up(&mut users, "jill").await;
    let login = log_in(&mut auth, "jill").await;

    // Her own address is changed by RequestEmailChange, which asks for her password
    // (tests/e2e/email.rs); UpdateUser refuses it and changes nothing.
    let email = pb::User { email: "jill@new.example.com".into(), ..Default::default() };
    let status =
        users.update_user(bearer(update(&jill.id, email.clone(), &["email"]), &login.access_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.get_details_bad_request().expect("a BadRequest").field_violations[0].field, "user.email");
    let get = pb::GetUserRequest { id: jill.id.clone() };
    let unchanged = users.get_user(bearer(get, &login.access_token)).await.unwrap().into_inner().user.unwrap();
    assert_eq!(unchanged.email, jill.email);

    let role = pb::User { role: "manager".into(), ..Default::default() };
    let status =
        users.update_user(bearer(update(&jill.id, role.clone(), &["role"]), &login.access_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = users
        .update_user(bearer(update(&jill.id, role.clone(), &["password"]), &login.access_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let root = log_in(&mut auth, "root").await;
    // A manager sets it at once; it is then to be verified.
    let set = users.update_user(bearer(update(&jill.id, email, &["email"]), &root.access_token)).await.unwrap();
    let set = set.into_inner().user.unwrap();
    assert_eq!((set.email.as_str(), set.email_verified), ("jill@new.example.com", false));
    let promoted = users.update_user(bearer(update(&jill.id, role, &["role"]), &root.access_token)).await.unwrap();
    assert_eq!(promoted.into_inner().user.unwrap().role, "manager");
    // Her live session sees the new role at once.
    let principal = auth.authenticate(access(&login.access_token)).await.unwrap().into_inner().principal.unwrap();
    assert_eq!(principal.role, "manager");
}

#[tokio::test]
async fn deactivating_a_user_ends_their_sessions_and_logins() {
    let db = TestDb::new().await;
    let service = manager_service(&db).await;
    let (mut users, mut auth) = (service.users(), service.auth());
    let kim = sign_up(&mut users, "kim").await;
    let login = log_in(&mut auth, "kim").await;
    let root = log_in(&mut auth, "root").await;
    let inactive = pb::User { is_active: false, ..Default::default() };
    users.update_user(bearer(update(&kim.id, inactive, &["is_active"]), &root.access_token)).await.unwrap();
    let status = auth.authenticate(access(&login.access_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = auth.login(pb::LoginRequest { username: "kim".into(), password: PASSWORD.into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "invalid username or password");
}

#[tokio::test]
async fn deleting_a_user_revokes_their_sessions() {
    let db = TestDb::new().await;
    let service = manager_service(&db).await;
    let (mut users, mut auth) = (service.users(), service.auth());
    let lee = sign_up(&mut users, "lee").await;
    let login = log_in(&mut auth, "lee").await;
    let delete = |id: &str| pb::DeleteUserRequest { id: id.into() };

    let status = users.delete_user(bearer(delete(&lee.id), &login.access_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let root = log_in(&mut auth, "root").await;
    users.delete_user(bearer(delete(&lee.id), &root.access_token)).await.unwrap();
    assert_eq!(auth.authenticate(access(&login.access_token)).await.unwrap_err().code(), Code::Unauthenticated);
    let status = users.delete_user(bearer(delete(&lee.id), &root.access_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let get = users.get_user(bearer(pb::GetUserRequest { id: lee.id.clone() }, &root.access_token)).await;
    assert_eq!(get.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn changing_the_password_revokes_the_other_sessions_only() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    let (mut users, mut auth) = (service.users(), service.auth());
    sign_up(&mut users, "mia").await;
    let here = log_in(&mut auth, "mia").await;
    let elsewhere = log_in(&mut auth, "mia").await;
    let change = |current: &str, new: &str| pb::ChangePasswordRequest {
        current_password: current.into(),
        new_password: new.into(),
    };

    let status = users
        .change_password(bearer(change("wrong password", "a new passphrase"), &here.access_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "current_password");
    let status = users.change_password(bearer(change(PASSWORD, "short"), &here.access_token)).await.unwrap_err();
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "new_password");

    let changed =
        users.change_password(bearer(change(PASSWORD, "a new passphrase"), &here.access_token)).await.unwrap();
    assert_eq!(changed.into_inner().revoked_sessions, 1);
    auth.authenticate(access(&here.access_token)).await.unwrap();
    assert_eq!(auth.authenticate(access(&elsewhere.access_token)).await.unwrap_err().code(), Code::Unauthenticated);
    let old = auth.login(pb::LoginRequest { username: "mia".into(), password: PASSWORD.into() }).await;
    assert_eq!(old.unwrap_err().code(), Code::Unauthenticated);
    auth.login(pb::LoginRequest { username: "mia".into(), password: "a new passphrase".into() }).await.unwrap();
}

#[tokio::test]
async fn a_raised_argon2_cost_rehashes_the_password_at_the_next_login() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "ned").await;
    service.stop().await.unwrap();

    let stored = || async {
        let conn = db.connect().await;
        let row = conn
            .query_one_raw(Statement::from_string(conn.get_database_backend(), "SELECT password_hash FROM credentials"))
            .await
            .unwrap()
            .unwrap();
        let hash: String = row.try_get("", "password_hash").unwrap();
        conn.close().await.ok();
        hash
    };
    assert!(stored().await.contains("m=19456,t=2,p=1"));
    let mut raised = config(&db);
    raised.argon2_iterations = 3;
    let service = Service::start(raised).await;
    log_in(&mut service.auth(), "ned").await;
    assert!(stored().await.contains("m=19456,t=3,p=1"));
    log_in(&mut service.auth(), "ned").await;
}
