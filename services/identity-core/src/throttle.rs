//! Login throttling with exponential back-off, kept in the database so that every replica
//! sees the same counters. See `ThrottleSettings` for the three counters.
//!
//! An attempt **reserves** its slot on each counter before the password is checked, in one
//! statement per counter (an upsert that increments and returns the count, refused while the
//! counter is locked). A counter that reaches its limit is locked by that same statement, so
//! however many attempts arrive at once, on one replica or several, at most the budget of them
//! is evaluated: the others find the lock. A reservation counts as a failure from the start
//! (a crash mid-check costs the attacker, not the budget); a right password releases it.
//!
//! Attempts refused while locked are not counted, so an attacker cannot extend a lock. The
//! account-wide counter only slows the addresses that have already failed against the
//! account: the first attempt from an address with no failures is always evaluated, so an
//! attack spread over many addresses cannot lock the real user out.
//!
//! Keys are stored as SHA-256 hashes of the normalised account and the address: a failed
//! login never stores what was typed. An IPv6 client counts as its /64 (`network`): one host
//! is usually given a whole /64, and could otherwise take a new budget per address. Times in this table are Unix **milliseconds**: a lock of
//! one second must not be anything from zero to two.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, Value};

use crate::{
    clock,
    error::{CoreError, CoreResult},
    settings::ThrottleSettings,
    tokens,
};

/// One counter: its stored key and its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counter {
    key: String,
    limit: u32,
}

impl Counter {
    fn new(kind: &str, value: &str, limit: u32) -> Self {
        Counter { key: format!("{kind}:{}", tokens::hash(value)), limit: limit.max(1) }
    }
}

/// The three counters of one login attempt.
pub(crate) struct Counters {
    /// This account from this address (the strict one).
    pair: Counter,
    /// This address across accounts (credential stuffing).
    address: Counter,
    /// This account from anywhere (distributed guessing); it slows only addresses that failed.
    account: Counter,
}

/// What a client address counts as: an IPv4 address itself (an IPv4-mapped IPv6 address as
/// that IPv4 address), an IPv6 address as its /64; anything else as written.
pub(crate) fn network(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")
            }
        },
        Ok(ip) => ip.to_string(),
        Err(_) => address.to_owned(),
    }
}

impl Counters {
    /// `account` names the account (`id:<user id>` for a known user, the normalised login
    /// otherwise); `address` is the client's address (counted as its `network`).
    pub(crate) fn new(settings: &ThrottleSettings, account: &str, address: &str) -> Self {
        let address = &network(address);
        Counters {
            pair: Counter::new("pair", &format!("{account}\n{address}"), settings.max_failures),
            address: Counter::new("address", address, settings.address_max_failures),
            account: Counter::new("account", account, settings.account_max_failures),
        }
    }
}

/// A slot held on a counter: the count it was given, and whether it set the counter's lock.
struct Slot {
    counter: Counter,
    count: u32,
    locked_it: bool,
}

/// The slots one attempt holds. Dropping it keeps them as failures; `succeeded` releases them.
#[must_use = "a reservation is released by `succeeded`; dropped, it counts as a failure"]
pub(crate) struct Reservation {
    pair: Slot,
    address: Slot,
    account: Slot,
}

/// Reserves one attempt on every counter, or refuses it (`Throttled`) and holds nothing.
pub(crate) async fn reserve(
    db: &DatabaseConnection,
    settings: &ThrottleSettings,
    counters: Counters,
) -> CoreResult<Reservation> {
    let now = clock::now_millis();
    let Counters { pair, address, account } = counters;
    let pair = match take(db, settings, pair, now, false).await? {
        Taken::Slot(slot) => slot,
        Taken::Locked(counter) => return Err(refusal(db, &counter, now).await),
    };
    // The address had failed against this account before this attempt: the account-wide
    // lock applies to it. Otherwise the attempt is counted but never refused by it.
    let failed_before = pair.count > 1;
    let address = match take(db, settings, address, now, false).await? {
        Taken::Slot(slot) => slot,
        Taken::Locked(counter) => {
            release(db, &pair).await?;
            return Err(refusal(db, &counter, now).await);
        }
    };
    let account = match take(db, settings, account, now, !failed_before).await? {
        Taken::Slot(slot) => slot,
        Taken::Locked(counter) => {
            release(db, &pair).await?;
            release(db, &address).await?;
            return Err(refusal(db, &counter, now).await);
        }
    };
    Ok(Reservation { pair, address, account })
}

impl Reservation {
    /// A right password: the account's counters start again from zero (not the address's:
    /// one valid account must not reset an address that is guessing at others, whose slot is
    /// only given back).
    pub(crate) async fn succeeded(self, db: &DatabaseConnection) -> CoreResult<()> {
        let sql = "DELETE FROM login_attempts WHERE throttle_key IN ($1, $2)";
        let values = [self.pair.counter.key.into(), self.account.counter.key.into()];
        db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), sql, values)).await?;
        release(db, &self.address).await
    }
}

/// A slot on a client's counter of failed attempts of one kind (its network, with the budget
/// of `max_failures`), reserved before the attempt is evaluated, as a login's are. Dropped, it
/// stays a failure; `release` gives it back (a success, or a failure that was not the
/// client's doing).
#[must_use = "a reservation is given back by `release`; dropped, it counts as a failure"]
pub(crate) struct ClientReservation {
    slot: Slot,
}

/// Reserves one attempt of `kind` for the client at `address`, or refuses it (`Throttled`).
pub(crate) async fn reserve_client(
    db: &DatabaseConnection,
    settings: &ThrottleSettings,
    kind: &str,
    address: &str,
) -> CoreResult<ClientReservation> {
    let now = clock::now_millis();
    let counter = Counter::new(kind, &network(address), settings.max_failures);
    match take(db, settings, counter, now, false).await? {
        Taken::Slot(slot) => Ok(ClientReservation { slot }),
        Taken::Locked(counter) => Err(refusal(db, &counter, now).await),
    }
}

impl ClientReservation {
    pub(crate) async fn release(self, db: &DatabaseConnection) -> CoreResult<()> {
        release(db, &self.slot).await
    }
}

enum Taken {
    Slot(Slot),
    Locked(Counter),
}

/// One statement: count this attempt on `counter` unless it is locked (or `bypass`), and lock
/// it — provisionally for the longest lock-out — when this attempt reaches the limit. The
/// lock is then shortened to the back-off the count calls for.
async fn take(
    db: &DatabaseConnection,
    settings: &ThrottleSettings,
    counter: Counter,
    now: i64,
    bypass: bool,
) -> CoreResult<Taken> {
    const RESERVE: &str = "\
        INSERT INTO login_attempts (throttle_key, failures, last_failure_at, locked_until) \
        VALUES ($1, 1, $2, CASE WHEN 1 >= $4 THEN $5 ELSE 0 END) \
        ON CONFLICT (throttle_key) DO UPDATE SET \
            failures = CASE WHEN $2 - login_attempts.last_failure_at >= $3 THEN 1 \
                ELSE login_attempts.failures + 1 END, \
            last_failure_at = $2, \
            locked_until = CASE WHEN (CASE WHEN $2 - login_attempts.last_failure_at >= $3 THEN 1 \
                ELSE login_attempts.failures + 1 END) >= $4 THEN $5 ELSE 0 END \
        WHERE login_attempts.locked_until <= $2 OR $6 \
        RETURNING failures";
    let provisional = now + clock::millis(settings.lockout_max).max(1);
    let values: [Value; 6] = [
        counter.key.clone().into(),
        now.into(),
        clock::millis(settings.failure_window).into(),
        i64::from(counter.limit).into(),
        provisional.into(),
        bypass.into(),
    ];
    let row = db.query_one_raw(Statement::from_sql_and_values(db.get_database_backend(), RESERVE, values)).await?;
    let Some(row) = row else { return Ok(Taken::Locked(counter)) };
    let count = u32::try_from(row.try_get::<i32>("", "failures")?).unwrap_or(u32::MAX);
    let locked_it = count >= counter.limit;
    if locked_it {
        // Only this attempt could reach this count (the provisional lock stops the others), so
        // the condition on the count finds the row as this statement left it.
        const REFINE: &str = "UPDATE login_attempts SET locked_until = $3 \
            WHERE throttle_key = $1 AND failures = $2 AND locked_until > $3";
        let until = now + clock::millis(lock_for(settings, counter.limit, count)).max(1);
        let values: [Value; 3] = [counter.key.clone().into(), i64::from(count).into(), until.into()];
        db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), REFINE, values)).await?;
    }
    Ok(Taken::Slot(Slot { counter, count, locked_it }))
}

/// Gives a slot back: one failure fewer, and the lock lifted if this attempt set it (nobody
/// else could count while it held).
async fn release(db: &DatabaseConnection, slot: &Slot) -> CoreResult<()> {
    const RELEASE: &str = "UPDATE login_attempts SET \
            failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END, \
            locked_until = CASE WHEN $2 THEN 0 ELSE locked_until END \
        WHERE throttle_key = $1";
    let values: [Value; 2] = [slot.counter.key.clone().into(), slot.locked_it.into()];
    db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), RELEASE, values)).await?;
    Ok(())
}

/// The refusal of a locked counter, with how long until it opens.
async fn refusal(db: &DatabaseConnection, counter: &Counter, now: i64) -> CoreError {
    let sql = "SELECT locked_until FROM login_attempts WHERE throttle_key = $1";
    let statement = Statement::from_sql_and_values(db.get_database_backend(), sql, [counter.key.clone().into()]);
    let locked_until = match db.query_one_raw(statement).await {
        Ok(Some(row)) => row.try_get::<i64>("", "locked_until").unwrap_or(now),
        Ok(None) => now,
        Err(error) => return error.into(),
    };
    // Whole seconds, rounded up: a client that waits that long finds the counter open.
    let wait = u64::try_from(locked_until - now).unwrap_or(0).div_ceil(1000).max(1);
    CoreError::Throttled { what: "failed logins", retry_after: Duration::from_secs(wait) }
}

/// A plain rate limit on the same table: counts one request on `kind:value` and refuses it
/// (`Throttled`, until the window ends) once more than `limit` were counted in the window.
/// One statement counts and returns the count, so a burst cannot pass more than `limit`.
/// The window starts with its first request (`last_failure_at`); `locked_until` holds its end,
/// so the janitor keeps the counter as long as it matters.
pub(crate) async fn rate(
    db: &DatabaseConnection,
    kind: &str,
    value: &str,
    limit: u32,
    window: Duration,
) -> CoreResult<()> {
    const COUNT: &str = "\
        INSERT INTO login_attempts (throttle_key, failures, last_failure_at, locked_until) \
        VALUES ($1, 1, $2, $2 + $3) \
        ON CONFLICT (throttle_key) DO UPDATE SET \
            failures = CASE WHEN $2 >= login_attempts.locked_until THEN 1 ELSE login_attempts.failures + 1 END, \
            last_failure_at = CASE WHEN $2 >= login_attempts.locked_until THEN $2 \
                ELSE login_attempts.last_failure_at END, \
            locked_until = CASE WHEN $2 >= login_attempts.locked_until THEN $2 + $3 \
                ELSE login_attempts.locked_until END \
        RETURNING failures, locked_until";
    let counter = Counter::new(kind, value, limit);
    let now = clock::now_millis();
    let values: [Value; 3] = [counter.key.into(), now.into(), clock::millis(window).max(1).into()];
    let row = db.query_one_raw(Statement::from_sql_and_values(db.get_database_backend(), COUNT, values)).await?;
    let Some(row) = row else { return Ok(()) };
    let count = row.try_get::<i32>("", "failures")?;
    let ends = row.try_get::<i64>("", "locked_until")?;
    if i64::from(count) > i64::from(counter.limit) {
        let wait = u64::try_from(ends - now).unwrap_or(0).div_ceil(1000).max(1);
        return Err(CoreError::Throttled {
            what: "requests for this address or from this client",
            retry_after: Duration::from_secs(wait),
        });
    }
    Ok(())
}

/// The lock-out after `failures` failures on a counter with `limit`: from the limit on,
/// `lockout * 2^(failures - limit)`, capped at `lockout_max`.
fn lock_for(settings: &ThrottleSettings, limit: u32, failures: u32) -> Duration {
    if failures < limit.max(1) {
        return Duration::ZERO;
    }
    let doublings = (failures - limit.max(1)).min(30);
    settings.lockout.saturating_mul(1u32 << doublings).min(settings.lockout_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_counts_as_its_slash_64() {
        assert_eq!(network("2001:db8::1"), network("2001:db8::ffff:2"));
        assert_eq!(network("2001:db8::1"), "2001:db8:0:0::/64");
        assert_ne!(network("2001:db8::1"), network("2001:db8:0:1::1"));
        assert_eq!(network("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(network("192.0.2.7"), "192.0.2.7");
        assert_eq!(network("unknown"), "unknown");
    }

    fn settings() -> ThrottleSettings {
        ThrottleSettings {
            lockout: Duration::from_secs(30),
            lockout_max: Duration::from_secs(300),
            failure_window: Duration::from_secs(900),
            ..ThrottleSettings::default()
        }
    }

    #[test]
    fn locks_from_the_limit_on_doubling_up_to_the_cap() {
        let s = settings();
        let secs = |n| Duration::from_secs(n);
        assert_eq!(lock_for(&s, 3, 1), secs(0));
        assert_eq!(lock_for(&s, 3, 2), secs(0));
        assert_eq!(lock_for(&s, 3, 3), secs(30));
        assert_eq!(lock_for(&s, 3, 4), secs(60));
        assert_eq!(lock_for(&s, 3, 5), secs(120));
        assert_eq!(lock_for(&s, 3, 41), secs(300));
    }

    #[test]
    fn keys_are_hashes_of_what_was_typed() {
        let counters = Counters::new(&settings(), &"x".repeat(4096), "203.0.113.7");
        for counter in [&counters.pair, &counters.address, &counters.account] {
            assert!(counter.key.len() <= 72, "{}", counter.key);
            assert!(!counter.key.contains("203.0.113.7") && !counter.key.contains("xxx"));
        }
        assert_ne!(counters.pair.key, Counters::new(&settings(), "y", "203.0.113.7").pair.key);
    }
}
