//! Login throttling with exponential back-off, kept in the database so that every replica
//! sees the same counters. See `ThrottleSettings` for the three counters and why attempts
//! refused while locked are not counted.

use std::time::Duration;

use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, sea_query::OnConflict};

use crate::{
    clock,
    entities::login_attempts,
    error::{CoreError, CoreResult},
    settings::ThrottleSettings,
};

/// The counters one login attempt touches, with the limit of each.
pub(crate) struct Keys {
    keys: [(String, u32); 3],
}

impl Keys {
    pub(crate) fn new(settings: &ThrottleSettings, account: &str, address: &str) -> Self {
        Keys {
            keys: [
                (format!("pair:{account}|{address}"), settings.max_failures),
                (format!("account:{account}"), settings.account_max_failures),
                (format!("address:{address}"), settings.address_max_failures),
            ],
        }
    }

    fn names(&self) -> Vec<String> {
        self.keys.iter().map(|(key, _)| key.clone()).collect()
    }
}

/// Refuses the attempt while any counter is locked.
pub(crate) async fn check(db: &DatabaseConnection, keys: &Keys) -> CoreResult<()> {
    let now = clock::now();
    let rows =
        login_attempts::Entity::find().filter(login_attempts::Column::ThrottleKey.is_in(keys.names())).all(db).await?;
    let locked_until = rows.iter().map(|row| row.locked_until).max().unwrap_or(0);
    if locked_until > now {
        return Err(CoreError::Throttled { retry_after: Duration::from_secs((locked_until - now) as u64) });
    }
    Ok(())
}

/// Counts a failed attempt on every counter.
pub(crate) async fn record_failure(
    db: &DatabaseConnection,
    settings: &ThrottleSettings,
    keys: &Keys,
) -> CoreResult<()> {
    let now = clock::now();
    let rows =
        login_attempts::Entity::find().filter(login_attempts::Column::ThrottleKey.is_in(keys.names())).all(db).await?;
    for (key, limit) in &keys.keys {
        let previous =
            rows.iter().find(|row| &row.throttle_key == key).map(|row| (row.failures as u32, row.last_failure_at));
        let (failures, locked_until) = next_state(settings, *limit, previous, now);
        let row = login_attempts::ActiveModel {
            throttle_key: Set(key.clone()),
            failures: Set(i32::try_from(failures).unwrap_or(i32::MAX)),
            last_failure_at: Set(now),
            locked_until: Set(locked_until),
        };
        login_attempts::Entity::insert(row)
            .on_conflict(
                OnConflict::column(login_attempts::Column::ThrottleKey)
                    .update_columns([
                        login_attempts::Column::Failures,
                        login_attempts::Column::LastFailureAt,
                        login_attempts::Column::LockedUntil,
                    ])
                    .to_owned(),
            )
            .exec(db)
            .await?;
    }
    Ok(())
}

/// A right password clears the counters of this account (not of the address: one valid
/// account must not reset an address that is guessing at others).
pub(crate) async fn record_success(db: &DatabaseConnection, keys: &Keys) -> CoreResult<()> {
    let account_keys: Vec<String> = keys.keys[..2].iter().map(|(key, _)| key.clone()).collect();
    login_attempts::Entity::delete_many()
        .filter(login_attempts::Column::ThrottleKey.is_in(account_keys))
        .exec(db)
        .await?;
    Ok(())
}

/// The failure count and lock after one more failure. Failures older than the window are
/// forgotten; from the limit on, the lock is `lockout * 2^(failures - limit)`, capped.
fn next_state(settings: &ThrottleSettings, limit: u32, previous: Option<(u32, i64)>, now: i64) -> (u32, i64) {
    let failures = match previous {
        Some((failures, last)) if now - last < clock::secs(settings.failure_window) => failures.saturating_add(1),
        _ => 1,
    };
    if failures < limit.max(1) {
        return (failures, 0);
    }
    let doublings = (failures - limit.max(1)).min(30);
    let lock = settings.lockout.saturating_mul(1u32 << doublings).min(settings.lockout_max);
    (failures, now + clock::secs(lock).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let now = 1_000_000;
        assert_eq!(next_state(&s, 3, None, now), (1, 0));
        assert_eq!(next_state(&s, 3, Some((1, now)), now), (2, 0));
        assert_eq!(next_state(&s, 3, Some((2, now)), now), (3, now + 30));
        assert_eq!(next_state(&s, 3, Some((3, now)), now), (4, now + 60));
        assert_eq!(next_state(&s, 3, Some((4, now)), now), (5, now + 120));
        assert_eq!(next_state(&s, 3, Some((40, now)), now), (41, now + 300));
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let s = settings();
        assert_eq!(next_state(&s, 3, Some((7, 0)), 10_000), (1, 0));
    }
}
