//! Signing keys that rotate themselves (docs/keys.md): relying parties caching the JWK set as
//! users run them never meet an unknown kid; a revoked key is refused everywhere at once; a
//! dump of the database holds no private key; an old database upgrades without losing its key.
//! Periods are seconds here: rotation every 5 s, published 2 s (plus the 2 s load margin)
//! ahead, a JWK set cacheable for 2 s, tokens living 3 s.

use std::{collections::BTreeMap, path::Path, process::Output, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use e2e::*;
use futures::future::join_all;
use identity_proto::pb;
use sea_orm::{ConnectionTrait, Database, Statement};
use tokio::time::Instant;
use tonic::Code;

const PERIOD: Duration = Duration::from_secs(5);
const PUBLISH_AHEAD: Duration = Duration::from_secs(2);
const MAX_AGE: Duration = Duration::from_secs(2);
const ACCESS_TTL: Duration = Duration::from_secs(3);

/// `config(db)` with keys rotating every few seconds.
fn rotating(db: &TestDb) -> identity_service::Config {
    let mut config = config(db);
    config.key_rotation_period = PERIOD.into();
    config.key_publish_ahead = PUBLISH_AHEAD.into();
    config.jwks_max_age = MAX_AGE.into();
    config.clock_skew = Duration::ZERO.into();
    config.access_ttl = ACCESS_TTL.into();
    config
}

/// `identity-service keys ARGS` against `db`, as an operator runs it while the service runs.
async fn keys_command(db: &TestDb, args: &[&str]) -> Output {
    keys_command_with(db, args, &[]).await
}

async fn keys_command_with(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(binary("identity-service"));
    command.env_clear().env("IDENTITY_DATABASE_URL", &db.url).env("IDENTITY_JWT_ALG", "ES256");
    if db.is_postgres() {
        command.env("IDENTITY_KEY_ENCRYPTION_KEY", TEST_KEK);
    }
    command.envs(env.iter().copied()).arg("keys").args(args).current_dir(dir.path()).output().await.unwrap()
}

/// `identity-service` started on `db` under `kek`, expected to refuse: its output.
async fn refused_start(db: &TestDb, kek: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    tokio::process::Command::new(binary("identity-service"))
        .env_clear()
        .env("IDENTITY_GRPC_ADDR", "127.0.0.1:0")
        .env("IDENTITY_DATABASE_URL", &db.url)
        .env("IDENTITY_KEY_ENCRYPTION_KEY", kek)
        .env("IDENTITY_JWT_ALG", "ES256")
        .current_dir(dir.path())
        .output()
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

/// The `kid` in a JWT's header.
fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn published(auth: &mut Auth) -> Vec<String> {
    let keys = auth.get_jwks(pb::GetJwksRequest {}).await.unwrap().into_inner().keys;
    keys.into_iter().map(|key| key.kid).collect()
}

/// When each key was seen: first and last in the JWK set, first and last signing a token.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    published: Option<Duration>,
    unpublished: Option<Duration>,
    first_token: Option<Duration>,
    last_token: Option<Duration>,
}

fn seconds(at: Option<Duration>) -> String {
    at.map_or_else(|| "-".into(), |at| format!("{:.2}", at.as_secs_f64()))
}

#[tokio::test]
async fn relying_parties_caching_the_jwk_set_verify_every_token_across_three_scheduled_rotations() {
    const RUN: Duration = Duration::from_secs(19);
    let db = TestDb::new().await;
    let identity = rotating(&db);
    let stack = Stack::start_with(db, identity, |_| {}).await;
    let facade = format!("http://{}", stack.facade.addr);
    let mut auth = stack.identity.auth();
    let issuer = auth.get_token_settings(pb::GetTokenSettingsRequest {}).await.unwrap().into_inner().issuer;

    let served = reqwest::get(format!("{facade}/.well-known/jwks.json")).await.unwrap();
    assert_eq!(served.headers()["cache-control"], "public, max-age=2");

    let mut users = stack.identity.users();
    let mut refresh = Vec::new();
    for name in ["pyjwt", "jose", "timeline"] {
        sign_up(&mut users, name).await;
        refresh.push(log_in(&mut auth, name).await.refresh_token);
    }
    let run = RUN.as_secs().to_string();
    let max_age = MAX_AGE.as_secs().to_string();
    let python = std::env::var("E2E_PYTHON").unwrap_or_else(|_| "python3".into());
    let node = std::env::var("E2E_NODE").unwrap_or_else(|_| "node".into());
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pyjwt = tokio::process::Command::new(&python)
        .arg(scripts.join("relying_parties/pyjwt_rp.py"))
        .args([facade.as_str(), refresh[0].as_str(), &run, &max_age, "0.1", &issuer])
        .output();
    let jose = tokio::process::Command::new(&node)
        .arg(scripts.join("node/jose_rp.mjs"))
        .args([facade.as_str(), refresh[1].as_str(), &run, &max_age, "0.1", &issuer])
        .output();

    // Meanwhile, the timeline as the identity service shows it, every 50 ms.
    let timeline = async {
        let started = Instant::now();
        let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
        let mut token = refresh[2].clone();
        while started.elapsed() < RUN + Duration::from_secs(5) {
            let now = started.elapsed();
            let set = published(&mut auth).await;
            for kid in &set {
                seen.entry(kid.clone()).or_default().published.get_or_insert(now);
            }
            for (kid, key) in seen.iter_mut() {
                if key.published.is_some() && key.unpublished.is_none() && !set.contains(kid) {
                    key.unpublished = Some(now);
                }
            }
            if now < RUN {
                let pair = auth
                    .refresh_token(pb::RefreshTokenRequest { refresh_token: token.clone() })
                    .await
                    .unwrap()
                    .into_inner();
                token = pair.refresh_token;
                let key = seen.entry(kid_of(&pair.access_token)).or_default();
                key.first_token.get_or_insert(now);
                key.last_token = Some(now);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    };
    let (pyjwt, jose, seen) = tokio::join!(pyjwt, jose, timeline);

    println!("kid                                   published  first token  last token  unpublished (s)");
    for (kid, key) in &seen {
        println!(
            "{kid}  {:>9}  {:>11}  {:>10}  {:>11}",
            seconds(key.published),
            seconds(key.first_token),
            seconds(key.last_token),
            seconds(key.unpublished)
        );
    }
    for (name, output) in [("PyJWT", pyjwt.unwrap()), ("jose", jose.unwrap())] {
        assert!(output.status.success(), "{name}: {}", text(&output.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        println!("{name}: {summary}");
        assert_eq!(summary["kid_not_found"], serde_json::json!([]), "{name}: {summary}");
        assert_eq!(summary["failures"], serde_json::json!([]), "{name}: {summary}");
        let kids = summary["kids"].as_array().unwrap().len();
        assert!(kids >= 4, "{name} saw {kids} keys: three rotations make four");
    }
    // Published a publish-ahead before its first token (the 50 ms poll is the tolerance);
    // still published a token lifetime after its last.
    let tolerance = Duration::from_millis(150);
    let signed: Vec<&Seen> = seen.values().filter(|key| key.first_token.is_some()).collect();
    assert!(signed.len() >= 4, "{seen:#?}");
    for key in &signed[1..] {
        let (published, first) = (key.published.unwrap(), key.first_token.unwrap());
        assert!(published + PUBLISH_AHEAD <= first + tolerance, "signed before it was published long enough: {key:?}");
    }
    for key in &signed {
        if let (Some(last), Some(gone)) = (key.last_token, key.unpublished) {
            assert!(last + ACCESS_TTL <= gone + tolerance, "unpublished while its tokens lived: {key:?}");
        }
    }
    assert!(signed.iter().any(|key| key.unpublished.is_some()), "no retired key was removed within the run: {seen:#?}");
}

#[tokio::test]
async fn a_revoked_key_is_refused_by_every_replica_within_a_poll_and_new_tokens_use_another() {
    let db = TestDb::new().await;
    let count = if db.is_postgres() { 2 } else { 1 };
    let mut replicas = Vec::new();
    for _ in 0..count {
        let mut config = config(&db);
        config.session_cache_ttl = secs(60);
        replicas.push(Service::start(config).await);
    }
    let facade = Facade::start(facade_config(&replicas[0])).await;
    sign_up(&mut replicas[0].users(), "leaky").await;
    let leaked = log_in(&mut replicas[0].auth(), "leaky").await.access_token;
    let kid = kid_of(&leaked);
    for replica in &replicas {
        replica.auth().authenticate(access(&leaked)).await.unwrap();
    }
    let webhook = format!("http://{}/hasura/webhook", facade.addr);
    let hook = |token: String| {
        let webhook = webhook.clone();
        async move { reqwest::Client::new().get(webhook).bearer_auth(token).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(hook(leaked.clone()).await, 200);

    let output = keys_command(&db, &["revoke", &kid]).await;
    let revoked_at = Instant::now();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let said = text(&output.stdout);
    assert!(said.starts_with(&format!("revoked {kid}: out of the JWK set")), "{said}");

    for replica in &replicas {
        let mut auth = replica.auth();
        eventually(Duration::from_secs(3), || {
            let mut auth = auth.clone();
            let leaked = leaked.clone();
            async move {
                let refused =
                    auth.authenticate(access(&leaked)).await.is_err_and(|s| s.code() == Code::Unauthenticated);
                refused.then_some(())
            }
        })
        .await;
        println!("refused {:?} after the command returned", revoked_at.elapsed());
        let verify = auth.verify_token(pb::VerifyTokenRequest { token: leaked.clone() }).await.unwrap_err();
        assert_eq!(verify.code(), Code::Unauthenticated);
        assert!(!published(&mut auth).await.contains(&kid));
    }
    assert_eq!(hook(leaked.clone()).await, 401);
    let jwks: serde_json::Value =
        json_of(reqwest::Client::new().get(format!("http://{}/.well-known/jwks.json", facade.addr))).await;
    assert!(!jwks.to_string().contains(&kid), "{jwks}");

    // A burst, every replica at once: not one acceptance.
    let burst = (0..40).map(|index| {
        let mut auth = replicas[index % replicas.len()].auth();
        let leaked = leaked.clone();
        async move { auth.authenticate(access(&leaked)).await.is_ok() }
    });
    assert!(!join_all(burst).await.into_iter().any(|accepted| accepted));

    // New logins, on every replica, are signed by another key and verify everywhere.
    for replica in &replicas {
        let token = log_in(&mut replica.auth(), "leaky").await.access_token;
        assert_ne!(kid_of(&token), kid);
        for other in &replicas {
            other.auth().authenticate(access(&token)).await.unwrap();
        }
        assert_eq!(hook(token).await, 200);
    }
    let again = keys_command(&db, &["revoke", &kid]).await;
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("already revoked"), "{}", text(&again.stderr));
}

#[tokio::test]
async fn operators_rotating_at_once_publish_exactly_one_next_key() {
    let db = TestDb::new().await;
    let service = Service::start(config(&db)).await;
    let before = published(&mut service.auth()).await;
    let attempts = join_all((0..6).map(|_| keys_command(&db, &["rotate"]))).await;
    let succeeded: Vec<&Output> = attempts.iter().filter(|output| output.status.success()).collect();
    assert_eq!(succeeded.len(), 1, "{:?}", attempts.iter().map(|o| text(&o.stderr)).collect::<Vec<_>>());
    for refused in attempts.iter().filter(|output| !output.status.success()) {
        let error = text(&refused.stderr);
        assert_eq!(error.lines().count(), 1, "{error}");
        assert!(error.contains("is already published and signs from"), "{error}");
    }
    let said = text(&succeeded[0].stdout);
    let new = said.strip_prefix("published ").and_then(|rest| rest.split(' ').next()).unwrap().to_owned();
    let listing = text(&keys_command(&db, &["list"]).await.stdout);
    assert_eq!(listing.lines().filter(|line| line.contains(" next ")).count(), 1, "{listing}");
    assert!(listing.lines().any(|line| line.starts_with(&new) && line.contains(" next ")), "{listing}");
    // Published (within the service's once-a-second poll), not yet signing.
    let mut auth = service.auth();
    eventually(Duration::from_secs(3), || {
        let mut auth = auth.clone();
        let new = new.clone();
        async move { published(&mut auth).await.contains(&new).then_some(()) }
    })
    .await;
    assert_eq!(published(&mut auth).await.len(), before.len() + 1);
    sign_up(&mut service.users(), "early").await;
    assert_eq!(kid_of(&log_in(&mut auth, "early").await.access_token), before[0]);
}

#[tokio::test]
async fn three_replicas_through_rotations_each_switch_at_one_instant_and_every_token_verifies_on_all() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        return;
    }
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Service::start(rotating(&db)).await);
    }
    let mut sessions = Vec::new();
    for (index, replica) in replicas.iter().enumerate() {
        let name = format!("r{index}");
        sign_up(&mut replica.users(), &name).await;
        sessions.push(log_in(&mut replica.auth(), &name).await.refresh_token);
    }
    let started = Instant::now();
    let (mut issued, mut failures, mut mixed_rounds) = (0, Vec::new(), 0);
    let mut kids = std::collections::BTreeSet::new();
    while started.elapsed() < Duration::from_secs(12) {
        // Each replica issues a token at the same moment; each token is checked on all three.
        let issuing =
            replicas.iter().zip(&sessions).map(|(replica, refresh)| {
                let mut auth = replica.auth();
                let refresh = refresh.clone();
                async move {
                    auth.refresh_token(pb::RefreshTokenRequest { refresh_token: refresh }).await.unwrap().into_inner()
                }
            });
        let pairs = join_all(issuing).await;
        let mut round = std::collections::BTreeSet::new();
        for (session, pair) in sessions.iter_mut().zip(&pairs) {
            *session = pair.refresh_token.clone();
            round.insert(kid_of(&pair.access_token));
        }
        // Tokens issued at one moment by the three carry one kid, but for a round or two that
        // straddle an activation (the three calls of a round are a few milliseconds apart). A
        // replica that switched only when it next read the key set would sign under the old
        // key for up to a poll (1 s): dozens of rounds.
        mixed_rounds += usize::from(round.len() > 1);
        kids.extend(round);
        let checks = pairs.iter().flat_map(|pair| {
            replicas.iter().map(move |replica| {
                let mut auth = replica.auth();
                let token = pair.access_token.clone();
                async move { (kid_of(&token), auth.verify_token(pb::VerifyTokenRequest { token }).await.err()) }
            })
        });
        for (kid, error) in join_all(checks).await {
            issued += 1;
            if let Some(status) = error {
                failures.push(format!("{kid}: {}", status.message()));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("{issued} checks, {} keys, {mixed_rounds} rounds across an activation", kids.len());
    assert!(failures.is_empty(), "{failures:?}");
    assert!(kids.len() >= 3, "{kids:?}");
    let activations = kids.len() - 1;
    assert!(
        mixed_rounds <= 2 * activations,
        "{mixed_rounds} rounds signed under two keys at once for {activations} activations: a replica switched late"
    );
    // One replica made each key: activations a whole period apart, never two at once.
    let db = Database::connect(&db.url).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT activates_at FROM signing_keys WHERE revoked_at IS NULL ORDER BY activates_at",
        ))
        .await
        .unwrap();
    let activations: Vec<i64> = rows.iter().map(|row| row.try_get::<i64>("", "activates_at").unwrap()).collect();
    for pair in activations.windows(2) {
        assert!(pair[1] - pair[0] >= 4_500, "two keys activate {} ms apart: {activations:?}", pair[1] - pair[0]);
    }
}

#[tokio::test]
async fn a_dump_of_the_keys_table_holds_no_private_key_and_a_wrong_kek_is_one_clear_error() {
    let db = TestDb::new().await;
    let kek = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let env = [("IDENTITY_DATABASE_URL", db.url.as_str()), ("IDENTITY_KEY_ENCRYPTION_KEY", kek)];
    let service = IdentityProcess::start(&env).await;
    sign_up(&mut service.users(), "dumped").await;
    let token = log_in(&mut service.auth(), "dumped").await.access_token;
    service.kill().await;

    let connection = db.connect().await;
    let backend = connection.get_database_backend();
    let rows = connection
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT kid, private_key_pem, private_key_sealed, kek_id, public_jwk FROM signing_keys",
        ))
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for row in &rows {
        let plaintext: String = row.try_get("", "private_key_pem").unwrap();
        let sealed: String = row.try_get("", "private_key_sealed").unwrap();
        let public: String = row.try_get("", "public_jwk").unwrap();
        assert_eq!(plaintext, "");
        assert!(!sealed.contains("PRIVATE"), "{sealed}");
        assert!(!public.contains("\"d\""), "{public}");
        // Not the PKCS#8 document of a P-256 key anywhere in it (its header: SEQUENCE, version 0,
        // the id-ecPublicKey algorithm): it is ciphertext, a nonce and a tag.
        let bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let pkcs8_p256 = [0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
        assert!(bytes.len() > 12 + 16, "{bytes:?}");
        assert!(!bytes.windows(pkcs8_p256.len()).any(|window| window == pkcs8_p256), "{bytes:?}");
    }
    connection.close().await.unwrap();

    // Another KEK: wrong for these keys until they are rewrapped under it.
    let other = "HxwdHhscGRoXGBkUFRYTERAPDg0MCwoJCAcGBQQDAgE=";
    let output = refused_start(&db, other).await;
    let error = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{error}");
    let line = error.lines().last().unwrap();
    assert!(
        line.starts_with("identity-service: IDENTITY_KEY_ENCRYPTION_KEY: signing key ")
            && line.contains("the wrong key?"),
        "{error}"
    );
    // The right KEK again: the same key signs, the old token verifies.
    let service = IdentityProcess::start(&env).await;
    service.auth().verify_token(pb::VerifyTokenRequest { token: token.clone() }).await.unwrap();
    assert_eq!(kid_of(&log_in(&mut service.auth(), "dumped").await.access_token), kid_of(&token));

    // Rotating the KEK: rewrap under a new one (the old one still opens), then the new one alone.
    let rewrapped = keys_command_with(
        &db,
        &["rewrap"],
        &[("IDENTITY_KEY_ENCRYPTION_KEY", other), ("IDENTITY_KEY_ENCRYPTION_PREVIOUS_KEYS", kek)],
    )
    .await;
    assert!(rewrapped.status.success(), "{}", text(&rewrapped.stderr));
    assert!(
        text(&rewrapped.stdout).starts_with("rewrapped 1 key(s) under key-encryption key "),
        "{}",
        text(&rewrapped.stdout)
    );
    service.kill().await;
    let env = [("IDENTITY_DATABASE_URL", db.url.as_str()), ("IDENTITY_KEY_ENCRYPTION_KEY", other)];
    let service = IdentityProcess::start(&env).await;
    service.auth().verify_token(pb::VerifyTokenRequest { token: token.clone() }).await.unwrap();
    assert_eq!(kid_of(&log_in(&mut service.auth(), "dumped").await.access_token), kid_of(&token));
}

#[tokio::test]
async fn a_restore_without_its_kek_starts_only_after_rotate_now_under_a_new_one_and_old_tokens_still_verify() {
    let db = TestDb::new().await;
    let lost = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let new = "HxwdHhscGRoXGBkUFRYTERAPDg0MCwoJCAcGBQQDAgE=";
    let service =
        IdentityProcess::start(&[("IDENTITY_DATABASE_URL", db.url.as_str()), ("IDENTITY_KEY_ENCRYPTION_KEY", lost)])
            .await;
    sign_up(&mut service.users(), "restored").await;
    let before = log_in(&mut service.auth(), "restored").await.access_token;
    service.kill().await;

    // The KEK is lost: the service does not start under another one...
    let refused = refused_start(&db, new).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("the wrong key?"), "{}", text(&refused.stderr));

    // ...until `keys rotate --now` under the new KEK, as docs/keys.md says to do.
    let rotated = keys_command_with(&db, &["rotate", "--now"], &[("IDENTITY_KEY_ENCRYPTION_KEY", new)]).await;
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    let service =
        IdentityProcess::start(&[("IDENTITY_DATABASE_URL", db.url.as_str()), ("IDENTITY_KEY_ENCRYPTION_KEY", new)])
            .await;
    // Tokens signed before verify (public keys are not sealed), however many ask at once; new
    // ones are signed by the new key.
    let checks = (0..20).map(|_| {
        let mut auth = service.auth();
        let token = before.clone();
        async move { auth.verify_token(pb::VerifyTokenRequest { token }).await }
    });
    for check in join_all(checks).await {
        check.expect("a token signed before the restore");
    }
    let after = log_in(&mut service.auth(), "restored").await.access_token;
    assert_ne!(kid_of(&after), kid_of(&before));
    service.auth().verify_token(pb::VerifyTokenRequest { token: after }).await.unwrap();
}

#[tokio::test]
async fn a_database_from_before_encryption_upgrades_keeps_its_kid_and_its_tokens_verify() {
    let db = TestDb::new().await;
    let (fixture, token) = match db.is_postgres() {
        true => {
            (include_str!("../fixtures/upgrade-postgres.sql"), include_str!("../fixtures/upgrade-postgres-token.txt"))
        }
        false => (include_str!("../fixtures/upgrade-sqlite.sql"), include_str!("../fixtures/upgrade-sqlite-token.txt")),
    };
    let token = token.trim();
    let connection = Database::connect(&db.url).await.unwrap();
    connection.execute_unprepared(fixture).await.unwrap();
    let plaintext = "SELECT COUNT(*) FROM signing_keys WHERE private_key_pem LIKE '-----BEGIN%'";
    assert_eq!(count(&connection, plaintext).await, 1, "the fixture holds its key in the clear");
    connection.close().await.unwrap();

    // The fixture's session and token were made to live a century; the idle limit too.
    let env = [
        ("IDENTITY_DATABASE_URL", db.url.as_str()),
        ("IDENTITY_JWT_ALG", "RS256"),
        ("IDENTITY_ACCESS_TTL", "36500d"),
        ("IDENTITY_REFRESH_TTL", "36500d"),
        ("IDENTITY_SESSION_IDLE_TTL", "36500d"),
    ];
    for start in 0..2 {
        let service = IdentityProcess::start(&env).await;
        let checks = (0..20).map(|_| {
            let mut auth = service.auth();
            async move { auth.verify_token(pb::VerifyTokenRequest { token: token.to_owned() }).await }
        });
        for verified in join_all(checks).await {
            let claims =
                verified.unwrap_or_else(|status| panic!("start {start}: {status:?}")).into_inner().claims.unwrap();
            assert_eq!(claims.username, "upgrader");
        }
        assert_eq!(published(&mut service.auth()).await, [kid_of(token)], "start {start}");
        let fresh = service
            .auth()
            .login(pb::LoginRequest { username: "upgrader".into(), password: PASSWORD.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(kid_of(&fresh.access_token), kid_of(token), "start {start}: the kid is kept");
        service.kill().await;
    }
    let connection = Database::connect(&db.url).await.unwrap();
    assert_eq!(count(&connection, plaintext).await, 0);
    let sealed = "SELECT COUNT(*) FROM signing_keys WHERE private_key_sealed IS NOT NULL AND private_key_pem = ''";
    assert_eq!(count(&connection, sealed).await, 1);
}

#[tokio::test]
async fn a_new_algorithm_or_hs256_secret_rotates_and_old_tokens_verify_until_they_expire() {
    let db = TestDb::new().await;
    let secret_a = "a".repeat(32);
    let secret_b = "b".repeat(32);
    let verifies = |service: &Service, token: &str| {
        let mut auth = service.auth();
        let token = token.to_owned();
        async move { auth.verify_token(pb::VerifyTokenRequest { token }).await.is_ok() }
    };

    let es256 = Service::start(config(&db)).await;
    sign_up(&mut es256.users(), "alg").await;
    let first = log_in(&mut es256.auth(), "alg").await.access_token;
    es256.stop().await.unwrap();

    let mut eddsa = config(&db);
    eddsa.jwt_alg = identity_core::JwtAlg::EdDsa;
    let service = Service::start(eddsa).await;
    let second = log_in(&mut service.auth(), "alg").await.access_token;
    assert_ne!(kid_of(&second), kid_of(&first));
    assert!(verifies(&service, &first).await, "the ES256 token still verifies");
    let settings = service.auth().get_token_settings(pb::GetTokenSettingsRequest {}).await.unwrap().into_inner();
    assert_eq!(settings.signing_algorithm, "EdDSA");
    assert_eq!(settings.verification_algorithms, ["ES256", "EdDSA"]);
    assert_eq!(published(&mut service.auth()).await.len(), 2);
    service.stop().await.unwrap();

    let hs256 = |secret: &str, previous: Vec<String>| {
        let mut config = config(&db);
        config.jwt_alg = identity_core::JwtAlg::Hs256;
        config.jwt_secret = Some(identity_core::Secret::new(secret));
        config.jwt_previous_secrets = previous.into_iter().map(identity_core::Secret::new).collect();
        config
    };
    let service = Service::start(hs256(&secret_a, vec![])).await;
    let third = log_in(&mut service.auth(), "alg").await.access_token;
    assert!(verifies(&service, &second).await, "the EdDSA token still verifies under HS256");
    service.stop().await.unwrap();

    let service = Service::start(hs256(&secret_b, vec![secret_a.clone()])).await;
    let fourth = log_in(&mut service.auth(), "alg").await.access_token;
    assert_ne!(kid_of(&fourth), kid_of(&third));
    let concurrent = join_all((0..10).map(|_| verifies(&service, &third))).await;
    assert!(concurrent.into_iter().all(|ok| ok), "a previous secret verifies");
    service.stop().await.unwrap();

    let service = Service::start(hs256(&secret_b, vec![])).await;
    assert!(!verifies(&service, &third).await, "a secret dropped no longer verifies");
    assert!(verifies(&service, &fourth).await);
}

#[tokio::test]
async fn the_jwk_set_has_a_strong_etag_answers_304_and_agrees_with_get_jwks() {
    let db = TestDb::new().await;
    let mut identity = config(&db);
    let metrics_addr = free_address();
    identity.metrics_addr = Some(metrics_addr);
    let stack = Stack::start_with(db, identity, |_| {}).await;
    let url = format!("http://{}/.well-known/jwks.json", stack.facade.addr);
    let client = reqwest::Client::new();
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.headers()["cache-control"], "public, max-age=300");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");
    let body: serde_json::Value = first.json().await.unwrap();
    let kids: Vec<String> =
        body["keys"].as_array().unwrap().iter().map(|key| key["kid"].as_str().unwrap().into()).collect();
    assert_eq!(kids, published(&mut stack.identity.auth()).await);

    let again = client.get(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert!(again.bytes().await.unwrap().is_empty());
    let other = client.get(&url).header("if-none-match", "\"something-else\"").send().await.unwrap();
    assert_eq!(other.status(), 200);

    // The key clock, as the metrics show it (set once a second).
    let until = eventually(Duration::from_secs(3), || async {
        let until = metric(metrics_addr, "identity_signing_key_next_activation_seconds").await;
        until.is_finite().then_some(until)
    })
    .await;
    assert!(until > 29.0 * 86400.0 && until <= 30.0 * 86400.0, "{until}");
    assert!(metric(metrics_addr, "identity_signing_key_age_seconds").await < 60.0);

    let output = keys_command(&stack.db, &["rotate"]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let changed = eventually(Duration::from_secs(3), || {
        let (client, url, etag) = (client.clone(), url.clone(), etag.clone());
        async move {
            let response = client.get(&url).header("if-none-match", &etag).send().await.unwrap();
            (response.status() == 200).then_some(response)
        }
    })
    .await;
    assert_ne!(changed.headers()["etag"], etag.as_str());
    let body: serde_json::Value = changed.json().await.unwrap();
    assert_eq!(body["keys"].as_array().unwrap().len(), 2, "{body}");
    let next = eventually(Duration::from_secs(3), || async {
        let until = metric(metrics_addr, "identity_signing_key_next_activation_seconds").await;
        (until <= 3602.0).then_some(until)
    })
    .await;
    assert!(next > 3500.0, "the published key signs in an hour and two seconds: {next}");
}

/// One gauge's value from the identity service's metrics.
async fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    let metrics = scrape(addr).await;
    sample(&metrics, name).unwrap_or_else(|| panic!("{name}: {metrics}"))
}
