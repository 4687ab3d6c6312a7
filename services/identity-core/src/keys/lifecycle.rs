//! The life of a signing key, as stored: `next` (published, not signing) → `current` (signing;
//! one per deployment) → `retired` (published, verifying only, until its last token expired
//! plus the clock skew) → removed. A leaked key is `revoked`: unpublished and refused at once.
//!
//! States are not stored but read off the row's instants (`activates_at`, `retires_at`,
//! `revoked_at`, Unix ms on the database's clock), so every replica moves a key from one state
//! to the next at the same instant without anyone writing anything then. What is written —
//! a new key, a new retirement, a revocation — is one transaction that first compares-and-sets
//! the change counter (`maintenance` row `signing_keys`): of replicas and operator commands
//! deciding at once, exactly one change lands; the others re-read and find nothing to do.

use jsonwebtoken::Algorithm;
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryOrder, Statement,
    TransactionTrait, Value,
};

use super::sealing::Sealing;
use crate::{
    clock,
    entities::signing_keys,
    error::{CoreError, CoreResult},
    settings::{JwtAlg, Settings},
};

/// How early the scheduled step looks ahead: one poll of the key loop (once a second), so that
/// a step taken up to a poll late still activates the next key on the period's boundary.
pub const SCHEDULE_EARLY_MS: i64 = 1_000;

/// Time given to every replica to load a new key (the event reaches them in milliseconds;
/// their once-a-second poll, if the event was missed) before the publish-ahead time counts.
pub const LOAD_MARGIN_MS: i64 = 2_000;

/// Where a key is in its life at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    Next,
    Current,
    Retired,
    /// Retired long enough that no token it signed is still valid: unpublished, deleted soon.
    Expired,
    Revoked,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Current => "current",
            KeyState::Retired => "retired",
            KeyState::Expired => "expired",
            KeyState::Revoked => "revoked",
        }
    }
}

/// The instants that decide states, from the settings.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub alg: JwtAlg,
    /// A retired key verifies this long after it stopped signing: the access-token lifetime
    /// plus the clock skew.
    pub verify_after_retiring_ms: i64,
    pub period_ms: i64,
    pub publish_ahead_ms: i64,
}

impl Timing {
    pub fn of(settings: &Settings) -> Self {
        Timing {
            alg: settings.jwt_alg,
            verify_after_retiring_ms: clock::millis(settings.access_ttl) + clock::millis(settings.keys.clock_skew),
            period_ms: clock::millis(settings.keys.rotation_period),
            publish_ahead_ms: clock::millis(settings.keys.publish_ahead),
        }
    }
}

/// A stored key's public facts and where it is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: String,
    pub state: KeyState,
    /// Unix ms: published.
    pub created_at: i64,
    pub activates_at: i64,
    pub retires_at: Option<i64>,
    /// When it leaves the JWK set and stops verifying (retired keys), or left it (revoked).
    pub removed_at: Option<i64>,
}

pub(crate) fn state(row: &signing_keys::Model, now: i64, timing: &Timing) -> KeyState {
    if row.revoked_at.is_some() {
        return KeyState::Revoked;
    }
    if let Some(retires_at) = row.retires_at.filter(|retires_at| *retires_at <= now) {
        return if now < retires_at.saturating_add(timing.verify_after_retiring_ms) {
            KeyState::Retired
        } else {
            KeyState::Expired
        };
    }
    if now < row.activates_at { KeyState::Next } else { KeyState::Current }
}

/// Until when a key is published and verifies (None: no end yet); None also for revoked keys,
/// which neither publish nor verify — callers check `revoked_at` first.
pub(crate) fn verifies_until(row: &signing_keys::Model, timing: &Timing) -> Option<i64> {
    row.retires_at.map(|retires_at| retires_at.saturating_add(timing.verify_after_retiring_ms))
}

pub(crate) fn info(row: &signing_keys::Model, now: i64, timing: &Timing) -> KeyInfo {
    KeyInfo {
        kid: row.kid.clone(),
        alg: row.alg.clone(),
        state: state(row, now, timing),
        created_at: row.created_at.saturating_mul(1000),
        activates_at: row.activates_at,
        retires_at: row.retires_at,
        removed_at: row.revoked_at.or_else(|| verifies_until(row, timing)),
    }
}

/// The keys that sign at `now`, newest activation first: normally one; several only in a
/// database from before key lifecycles (the start plan retires all but the newest).
fn signing(rows: &[signing_keys::Model], now: i64, timing: &Timing) -> Vec<usize> {
    let mut found: Vec<usize> =
        (0..rows.len()).filter(|index| state(&rows[*index], now, timing) == KeyState::Current).collect();
    found.sort_by_key(|index| std::cmp::Reverse((rows[*index].activates_at, rows[*index].kid.clone())));
    found
}

fn scheduled(rows: &[signing_keys::Model], now: i64, timing: &Timing) -> Option<usize> {
    (0..rows.len())
        .filter(|index| state(&rows[*index], now, timing) == KeyState::Next)
        .min_by_key(|index| rows[*index].activates_at)
}

/// A change to the key set, decided on what was read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Intent {
    /// A new key of `alg`, signing from `activates_at`; `retire` stop signing then.
    Add { alg: JwtAlg, activates_at: i64, retire: Vec<String> },
    /// The next key signs at once; `retire` stop signing now.
    Promote { kid: String, retire: Vec<String> },
    /// `kids` stop signing at `at`, or (None) no longer retire (their successor was revoked).
    SetRetires { kids: Vec<String>, at: Option<i64> },
    /// `kid` is revoked, and `then` gives the deployment a signing key if it was the one.
    Revoke { kid: String, then: Option<Box<Intent>> },
}

/// What a replica starting must change: the deployment needs exactly one current key, of the
/// configured algorithm (under HS256, none: the secret signs and stored keys only verify).
pub(crate) fn plan_start(rows: &[signing_keys::Model], now: i64, timing: &Timing) -> Option<Intent> {
    let signing = signing(rows, now, timing);
    let next = scheduled(rows, now, timing);
    if timing.alg == JwtAlg::Hs256 {
        let kids: Vec<String> = signing.iter().chain(next.iter()).map(|index| rows[*index].kid.clone()).collect();
        return (!kids.is_empty()).then_some(Intent::SetRetires { kids, at: Some(now) });
    }
    let Some(&current) = signing.first() else {
        return Some(match next {
            Some(next) if rows[next].alg == timing.alg.name() => {
                Intent::Promote { kid: rows[next].kid.clone(), retire: vec![] }
            }
            other => Intent::Add {
                alg: timing.alg,
                activates_at: now,
                retire: other.map(|index| rows[index].kid.clone()).into_iter().collect(),
            },
        });
    };
    if rows[current].alg != timing.alg.name() {
        // A new algorithm: a rotation now; tokens of the old key verify until they expire.
        let retire = signing.iter().chain(next.iter()).map(|index| rows[*index].kid.clone()).collect();
        return Some(Intent::Add { alg: timing.alg, activates_at: now, retire });
    }
    let others: Vec<String> = signing[1..].iter().map(|index| rows[*index].kid.clone()).collect();
    (!others.is_empty()).then_some(Intent::SetRetires { kids: others, at: Some(now) })
}

/// The scheduled step: once the current key is due to be replaced within the publish-ahead
/// time (and the load margin), publish its successor, to sign when the period is up.
pub(crate) fn plan_tick(rows: &[signing_keys::Model], now: i64, timing: &Timing) -> Option<Intent> {
    if timing.alg == JwtAlg::Hs256 {
        return None;
    }
    let signing = signing(rows, now, timing);
    let Some(&current) = signing.first() else { return plan_start(rows, now, timing) };
    if scheduled(rows, now, timing).is_some() {
        return None;
    }
    let ahead = timing.publish_ahead_ms + LOAD_MARGIN_MS;
    let due = rows[current].activates_at.saturating_add(timing.period_ms);
    if now < due.saturating_sub(ahead + SCHEDULE_EARLY_MS) {
        return None;
    }
    Some(Intent::Add { alg: timing.alg, activates_at: due.max(now + ahead), retire: vec![rows[current].kid.clone()] })
}

/// `keys rotate`: a new key, published now and signing after the publish-ahead time (or at
/// once, `immediately`).
pub(crate) fn plan_rotate(
    rows: &[signing_keys::Model],
    now: i64,
    timing: &Timing,
    immediately: bool,
) -> CoreResult<Intent> {
    if timing.alg == JwtAlg::Hs256 {
        return Err(CoreError::Refused(
            "HS256 signs with IDENTITY_JWT_SECRET: rotate it by moving the secret to IDENTITY_JWT_PREVIOUS_SECRETS and \
             setting a new one"
                .into(),
        ));
    }
    let signing = signing(rows, now, timing);
    let next = scheduled(rows, now, timing);
    if immediately {
        let retire = signing.iter().chain(next.iter()).map(|index| rows[*index].kid.clone()).collect();
        return Ok(Intent::Add { alg: timing.alg, activates_at: now, retire });
    }
    if let Some(next) = next {
        return Err(CoreError::Refused(format!(
            "key {} is already published and signs from {}; `keys rotate --now` signs with a new key at once",
            rows[next].kid,
            format_ms(rows[next].activates_at)
        )));
    }
    Ok(Intent::Add {
        alg: timing.alg,
        activates_at: now + timing.publish_ahead_ms + LOAD_MARGIN_MS,
        retire: signing.iter().map(|index| rows[*index].kid.clone()).collect(),
    })
}

/// `keys revoke KID`: unpublished and refused at once; if it signed (or was to), the
/// deployment gets another signing key in the same change.
pub(crate) fn plan_revoke(rows: &[signing_keys::Model], now: i64, timing: &Timing, kid: &str) -> CoreResult<Intent> {
    let Some(row) = rows.iter().find(|row| row.kid == kid) else {
        if kid.starts_with("hs256-") {
            return Err(CoreError::Refused(format!(
                "{kid} is an HS256 secret, not a stored key: revoke it by removing it from IDENTITY_JWT_SECRET / \
                 IDENTITY_JWT_PREVIOUS_SECRETS on every replica"
            )));
        }
        return Err(CoreError::NotFound("signing key"));
    };
    let signing = signing(rows, now, timing);
    let next = scheduled(rows, now, timing);
    let then = match state(row, now, timing) {
        KeyState::Revoked => {
            return Err(CoreError::Refused(format!(
                "key {kid} was already revoked at {}",
                format_ms(row.revoked_at.unwrap_or_default())
            )));
        }
        KeyState::Current if timing.alg != JwtAlg::Hs256 => Some(match next {
            Some(next) => Intent::Promote { kid: rows[next].kid.clone(), retire: vec![] },
            None => Intent::Add { alg: timing.alg, activates_at: now, retire: vec![] },
        }),
        // Its predecessor no longer hands over to it (the schedule publishes another).
        KeyState::Next => {
            let kids: Vec<String> = signing.iter().map(|index| rows[*index].kid.clone()).collect();
            (!kids.is_empty()).then_some(Intent::SetRetires { kids, at: None })
        }
        _ => None,
    };
    Ok(Intent::Revoke { kid: kid.to_owned(), then: then.map(Box::new) })
}

/// The change counter and the database's clock, then every stored key: read in that order, so
/// that a change landing in between fails the compare-and-set instead of going unseen.
pub(crate) async fn read(db: &DatabaseConnection) -> CoreResult<(i64, i64, Vec<signing_keys::Model>)> {
    let (generation, now) = read_counter(db).await?;
    Ok((generation, now, read_rows(db).await?))
}

/// The change counter and the database's clock (Unix ms).
pub(crate) async fn read_counter(db: &DatabaseConnection) -> CoreResult<(i64, i64)> {
    let backend = db.get_database_backend();
    let now = match backend {
        DbBackend::Postgres => "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
        _ => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    };
    let sql = format!("SELECT last_run_at AS generation, {now} AS now FROM maintenance WHERE task = 'signing_keys'");
    let row = db
        .query_one_raw(Statement::from_string(backend, sql))
        .await?
        .ok_or_else(|| CoreError::internal("the signing_keys change counter is missing"))?;
    Ok((row.try_get("", "generation")?, row.try_get("", "now")?))
}

pub(crate) async fn read_rows(db: &DatabaseConnection) -> CoreResult<Vec<signing_keys::Model>> {
    Ok(signing_keys::Entity::find()
        .order_by_asc(signing_keys::Column::ActivatesAt)
        .order_by_asc(signing_keys::Column::Kid)
        .all(db)
        .await?)
}

/// A statement that changes the key set.
pub(crate) enum Op {
    Insert(Box<signing_keys::ActiveModel>),
    Activate { kid: String, at: i64 },
    Retire { kid: String, at: Option<i64> },
    Revoke { kid: String, at: i64 },
}

/// Applies `ops` if the key set is still at `seen` (and moves it on); false if another change
/// landed first (nothing written: re-read and decide again).
pub(crate) async fn commit(db: &DatabaseConnection, seen: i64, ops: Vec<Op>) -> CoreResult<bool> {
    let backend = db.get_database_backend();
    let transaction = db.begin().await?;
    let claimed = transaction
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "UPDATE maintenance SET last_run_at = $1 WHERE task = 'signing_keys' AND last_run_at = $2",
            [Value::from(seen + 1), Value::from(seen)],
        ))
        .await?
        .rows_affected();
    if claimed != 1 {
        transaction.rollback().await?;
        return Ok(false);
    }
    for op in ops {
        let (sql, values): (&str, Vec<Value>) = match op {
            Op::Insert(row) => {
                signing_keys::Entity::insert(*row).exec_without_returning(&transaction).await?;
                continue;
            }
            Op::Activate { kid, at } => (
                "UPDATE signing_keys SET activates_at = $1, retires_at = NULL WHERE kid = $2",
                vec![at.into(), kid.into()],
            ),
            Op::Retire { kid, at } => {
                ("UPDATE signing_keys SET retires_at = $1 WHERE kid = $2", vec![at.into(), kid.into()])
            }
            // The private key goes with the revocation: a leaked key is not kept.
            Op::Revoke { kid, at } => (
                "UPDATE signing_keys SET revoked_at = $1, private_key_pem = '', private_key_sealed = NULL WHERE kid = $2",
                vec![at.into(), kid.into()],
            ),
        };
        transaction.execute_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
    }
    transaction.commit().await?;
    Ok(true)
}

/// Seals every key still stored in the clear (databases from before encryption at rest) under
/// the current KEK, and empties its plaintext column. Idempotent: a row sealed meanwhile by
/// another process is left as it is.
pub(crate) async fn seal_plaintext(db: &DatabaseConnection, sealing: &Sealing) -> CoreResult<Vec<String>> {
    let mut sealed = Vec::new();
    for row in signing_keys::Entity::find().all(db).await? {
        if row.private_key_sealed.is_some() || row.private_key_pem.is_empty() {
            continue;
        }
        let material = sealing.seal(&row.kid, row.private_key_pem.as_bytes())?;
        let statement = Statement::from_sql_and_values(
            db.get_database_backend(),
            "UPDATE signing_keys SET private_key_sealed = $1, kek_id = $2, private_key_pem = '' \
             WHERE kid = $3 AND private_key_sealed IS NULL",
            [Value::from(material.text), Value::from(material.kek_id), Value::from(row.kid.clone())],
        );
        if db.execute_raw(statement).await?.rows_affected() == 1 {
            sealed.push(row.kid);
        }
    }
    Ok(sealed)
}

/// Re-seals every stored private key under the current KEK (`keys rewrap`): (moved, already
/// under it). Each row is one conditional update: a row changed meanwhile is left alone.
pub(crate) async fn rewrap(db: &DatabaseConnection, sealing: &Sealing) -> CoreResult<(Vec<String>, usize)> {
    seal_plaintext(db, sealing).await?;
    let (mut moved, mut already) = (Vec::new(), 0);
    for row in signing_keys::Entity::find().all(db).await? {
        let (Some(text), Some(kek_id)) = (&row.private_key_sealed, &row.kek_id) else { continue };
        if kek_id == sealing.current_id() {
            already += 1;
            continue;
        }
        let plaintext = sealing.open(&row.kid, text, kek_id)?;
        let material = sealing.seal(&row.kid, &plaintext)?;
        let statement = Statement::from_sql_and_values(
            db.get_database_backend(),
            "UPDATE signing_keys SET private_key_sealed = $1, kek_id = $2 WHERE kid = $3 AND kek_id = $4",
            [
                Value::from(material.text),
                Value::from(material.kek_id),
                Value::from(row.kid.clone()),
                Value::from(kek_id.clone()),
            ],
        );
        if db.execute_raw(statement).await?.rows_affected() == 1 {
            moved.push(row.kid);
        }
    }
    Ok((moved, already))
}

/// Whether any of `rows` is past its life (`remove_expired` would delete it).
pub(crate) fn any_expired(rows: &[signing_keys::Model], now: i64, timing: &Timing) -> bool {
    let cutoff = now.saturating_sub(timing.verify_after_retiring_ms);
    rows.iter().any(|row| row.retires_at.is_some_and(|at| at < cutoff) || row.revoked_at.is_some_and(|at| at < cutoff))
}

/// Deletes keys that no longer verify anything: retired (or revoked) longer ago than a token
/// lives plus the clock skew. No event: they left the JWK set and stopped verifying at that
/// instant on every replica already.
pub(crate) async fn remove_expired(db: &DatabaseConnection, now: i64, timing: &Timing) -> CoreResult<u64> {
    let cutoff = now.saturating_sub(timing.verify_after_retiring_ms);
    let statement = Statement::from_sql_and_values(
        db.get_database_backend(),
        "DELETE FROM signing_keys WHERE retires_at < $1 OR revoked_at < $1",
        [Value::from(cutoff)],
    );
    Ok(db.execute_raw(statement).await?.rows_affected())
}

/// A new key's row, its private key sealed.
pub(crate) fn sealed_row(
    alg: JwtAlg,
    generated: super::Generated,
    activates_at: i64,
    now: i64,
    sealing: &Sealing,
) -> CoreResult<signing_keys::ActiveModel> {
    let material = sealing.seal(&generated.kid, generated.private_pem.as_bytes())?;
    Ok(signing_keys::ActiveModel {
        kid: Set(generated.kid),
        alg: Set(alg.name().to_owned()),
        private_key_pem: Set(String::new()),
        public_jwk: Set(generated.public_jwk),
        created_at: Set(now / 1000),
        activates_at: Set(activates_at),
        retires_at: Set(None),
        revoked_at: Set(None),
        private_key_sealed: Set(Some(material.text)),
        kek_id: Set(Some(material.kek_id)),
    })
}

/// The statements of an intent; `fresh` makes the new key an `Add` needs.
pub(crate) fn ops(
    intent: Intent,
    now: i64,
    fresh: &mut dyn FnMut(JwtAlg, i64) -> CoreResult<signing_keys::ActiveModel>,
) -> CoreResult<Vec<Op>> {
    Ok(match intent {
        Intent::Add { alg, activates_at, retire } => {
            let mut ops = vec![Op::Insert(Box::new(fresh(alg, activates_at)?))];
            ops.extend(retire.into_iter().map(|kid| Op::Retire { kid, at: Some(activates_at) }));
            ops
        }
        Intent::Promote { kid, retire } => {
            let mut ops = vec![Op::Activate { kid, at: now }];
            ops.extend(retire.into_iter().map(|kid| Op::Retire { kid, at: Some(now) }));
            ops
        }
        Intent::SetRetires { kids, at } => kids.into_iter().map(|kid| Op::Retire { kid, at }).collect(),
        Intent::Revoke { kid, then } => {
            let mut ops = vec![Op::Revoke { kid, at: now }];
            if let Some(then) = then {
                ops.extend(self::ops(*then, now, fresh)?);
            }
            ops
        }
    })
}

/// Whether an intent needs a new key (generated before the transaction, off the async workers).
pub(crate) fn needs_key(intent: &Intent) -> Option<JwtAlg> {
    match intent {
        Intent::Add { alg, .. } => Some(*alg),
        Intent::Revoke { then: Some(then), .. } => needs_key(then),
        _ => None,
    }
}

/// The algorithm of a stored key's name.
pub(crate) fn algorithm(name: &str) -> CoreResult<(JwtAlg, Algorithm)> {
    let alg: JwtAlg = name.parse().map_err(CoreError::internal)?;
    Ok((alg, alg.algorithm()))
}

/// Unix ms as RFC 3339 UTC, for messages.
pub fn format_ms(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing =
        Timing { alg: JwtAlg::Es256, verify_after_retiring_ms: 400, period_ms: 10_000, publish_ahead_ms: 1_000 };

    fn row(kid: &str, alg: &str, activates_at: i64, retires_at: Option<i64>) -> signing_keys::Model {
        signing_keys::Model {
            kid: kid.into(),
            alg: alg.into(),
            private_key_pem: String::new(),
            public_jwk: String::new(),
            created_at: 0,
            activates_at,
            retires_at,
            revoked_at: None,
            private_key_sealed: None,
            kek_id: None,
        }
    }

    #[test]
    fn a_key_moves_through_its_states_by_the_clock_alone() {
        let key = row("k", "ES256", 1_000, Some(5_000));
        let states: Vec<KeyState> =
            [0, 1_000, 4_999, 5_000, 5_399, 5_400].map(|now| state(&key, now, &TIMING)).to_vec();
        use KeyState::*;
        assert_eq!(states, [Next, Current, Current, Retired, Retired, Expired]);
        let revoked = signing_keys::Model { revoked_at: Some(2_000), ..key };
        assert_eq!(state(&revoked, 3_000, &TIMING), Revoked);
    }

    #[test]
    fn the_successor_is_published_ahead_and_signs_when_the_period_is_up() {
        let rows = [row("a", "ES256", 0, None)];
        assert_eq!(plan_tick(&rows, 5_999, &TIMING), None);
        assert_eq!(
            plan_tick(&rows, 6_000, &TIMING),
            Some(Intent::Add { alg: JwtAlg::Es256, activates_at: 10_000, retire: vec!["a".into()] })
        );
        // Late (a replica was down): still a full publish-ahead before it signs.
        assert_eq!(
            plan_tick(&rows, 20_000, &TIMING),
            Some(Intent::Add { alg: JwtAlg::Es256, activates_at: 23_000, retire: vec!["a".into()] })
        );
        let scheduled = [row("a", "ES256", 0, Some(10_000)), row("b", "ES256", 10_000, None)];
        assert_eq!(plan_tick(&scheduled, 8_000, &TIMING), None);
    }

    #[test]
    fn a_start_makes_one_current_key_of_the_configured_algorithm() {
        assert_eq!(
            plan_start(&[], 5, &TIMING),
            Some(Intent::Add { alg: JwtAlg::Es256, activates_at: 5, retire: vec![] })
        );
        let old = [row("rsa", "RS256", 0, None)];
        assert_eq!(
            plan_start(&old, 5, &TIMING),
            Some(Intent::Add { alg: JwtAlg::Es256, activates_at: 5, retire: vec!["rsa".into()] })
        );
        let legacy = [row("old", "ES256", 0, None), row("new", "ES256", 3, None)];
        assert_eq!(plan_start(&legacy, 5, &TIMING), Some(Intent::SetRetires { kids: vec!["old".into()], at: Some(5) }));
        assert_eq!(plan_start(&[row("a", "ES256", 0, None)], 5, &TIMING), None);
        let hs = Timing { alg: JwtAlg::Hs256, ..TIMING };
        assert_eq!(plan_start(&old, 5, &hs), Some(Intent::SetRetires { kids: vec!["rsa".into()], at: Some(5) }));
    }

    #[test]
    fn revoking_the_signing_key_hands_over_to_the_next_or_a_new_one() {
        let rows = [row("a", "ES256", 0, Some(10_000)), row("b", "ES256", 10_000, None)];
        assert_eq!(
            plan_revoke(&rows, 8_000, &TIMING, "a").unwrap(),
            Intent::Revoke {
                kid: "a".into(),
                then: Some(Box::new(Intent::Promote { kid: "b".into(), retire: vec![] }))
            }
        );
        assert_eq!(
            plan_revoke(&rows, 8_000, &TIMING, "b").unwrap(),
            Intent::Revoke {
                kid: "b".into(),
                then: Some(Box::new(Intent::SetRetires { kids: vec!["a".into()], at: None }))
            }
        );
        let alone = [row("a", "ES256", 0, None)];
        assert_eq!(
            plan_revoke(&alone, 8_000, &TIMING, "a").unwrap(),
            Intent::Revoke {
                kid: "a".into(),
                then: Some(Box::new(Intent::Add { alg: JwtAlg::Es256, activates_at: 8_000, retire: vec![] }))
            }
        );
        assert!(matches!(plan_revoke(&alone, 1, &TIMING, "zz"), Err(CoreError::NotFound(_))));
        assert!(matches!(plan_revoke(&alone, 1, &TIMING, "hs256-00"), Err(CoreError::Refused(_))));
    }

    #[test]
    fn rotate_schedules_or_signs_at_once_and_hs256_refuses() {
        let rows = [row("a", "ES256", 0, None)];
        assert_eq!(
            plan_rotate(&rows, 100, &TIMING, false).unwrap(),
            Intent::Add { alg: JwtAlg::Es256, activates_at: 100 + 1_000 + LOAD_MARGIN_MS, retire: vec!["a".into()] }
        );
        assert_eq!(
            plan_rotate(&rows, 100, &TIMING, true).unwrap(),
            Intent::Add { alg: JwtAlg::Es256, activates_at: 100, retire: vec!["a".into()] }
        );
        let scheduled = [row("a", "ES256", 0, Some(10_000)), row("b", "ES256", 10_000, None)];
        assert!(matches!(plan_rotate(&scheduled, 100, &TIMING, false), Err(CoreError::Refused(_))));
        let hs = Timing { alg: JwtAlg::Hs256, ..TIMING };
        assert!(matches!(plan_rotate(&rows, 100, &hs, true), Err(CoreError::Refused(_))));
    }

    #[test]
    fn instants_print_as_utc() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
    }
}
