//! Password hashing (argon2id, PHC strings) and the password policy.

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version, password_hash::SaltString,
};
use rand::RngCore;

use crate::{
    blocking::BlockingPool,
    error::{CoreError, CoreResult},
    settings::{PasswordCost, Secret},
};

pub const MIN_LENGTH: usize = 8;
/// Long enough for any passphrase, short enough that hashing it is no denial of service.
pub const MAX_BYTES: usize = 1024;

/// Checks a new password against the policy. The error names `field`.
pub fn check_policy(field: &'static str, password: &str, username: &str) -> CoreResult<()> {
    if password.chars().count() < MIN_LENGTH {
        return Err(CoreError::invalid(field, format!("must be at least {MIN_LENGTH} characters")));
    }
    if password.len() > MAX_BYTES {
        return Err(CoreError::invalid(field, format!("must be at most {MAX_BYTES} bytes")));
    }
    if password.chars().all(|c| c.is_ascii_digit()) {
        return Err(CoreError::invalid(field, "must not be entirely numeric"));
    }
    if !username.is_empty() && password.eq_ignore_ascii_case(username) {
        return Err(CoreError::invalid(field, "must differ from the username"));
    }
    Ok(())
}

/// A password presented for checking (login, current password): not empty, and no longer
/// than any password the policy lets anyone set.
pub fn check_presented(field: &'static str, password: &str) -> CoreResult<()> {
    if password.is_empty() {
        return Err(CoreError::invalid(field, "must not be empty"));
    }
    if password.len() > MAX_BYTES {
        return Err(CoreError::invalid(field, format!("must be at most {MAX_BYTES} bytes")));
    }
    Ok(())
}

/// The verdict on a password.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    No,
    Yes,
    /// Right, but hashed with weaker parameters than today's: store this new hash.
    YesRehashed(String),
}

/// Hashes and verifies on the bounded blocking pool.
#[derive(Clone, Debug)]
pub struct Passwords {
    cost: PasswordCost,
    pool: BlockingPool,
    /// A hash of a random password with today's cost, verified when the user is unknown so
    /// that "no such user" costs the same time as "wrong password".
    decoy: String,
}

impl Passwords {
    pub async fn new(cost: PasswordCost, pool: BlockingPool) -> CoreResult<Self> {
        let mut random = [0u8; 32];
        rand::rng().fill_bytes(&mut random);
        let decoy_password = Secret::new(base64_url(&random));
        let decoy = pool.run(move || hash_with(cost, decoy_password.expose())).await??;
        Ok(Passwords { cost, pool, decoy })
    }

    pub async fn hash(&self, password: &str) -> CoreResult<String> {
        let (cost, password) = (self.cost, Secret::new(password));
        self.pool.run(move || hash_with(cost, password.expose())).await?
    }

    /// Verifies `password` against `phc`, or against the decoy when there is no user.
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> CoreResult<Verified> {
        // A user made by a provider has a password nobody can type until they set one: it
        // is checked like an unknown user's, at the same cost.
        let phc = phc.filter(|phc| !phc.starts_with(crate::social::UNUSABLE_PASSWORD_PREFIX));
        let known = phc.is_some();
        let phc = phc.unwrap_or(&self.decoy).to_owned();
        let (cost, password) = (self.cost, Secret::new(password));
        let verdict = self.pool.run(move || verify_with(cost, password.expose(), &phc)).await??;
        Ok(if known { verdict } else { Verified::No })
    }
}

fn argon2(cost: PasswordCost) -> CoreResult<Argon2<'static>> {
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None).map_err(CoreError::internal)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_with(cost: PasswordCost, password: &str) -> CoreResult<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(CoreError::internal)?;
    let hash = argon2(cost)?.hash_password(password.as_bytes(), &salt).map_err(CoreError::internal)?;
    Ok(hash.to_string())
}

fn verify_with(cost: PasswordCost, password: &str, phc: &str) -> CoreResult<Verified> {
    let parsed = PasswordHash::new(phc).map_err(CoreError::internal)?;
    // The hash carries its own parameters; verification uses those.
    if argon2(cost)?.verify_password(password.as_bytes(), &parsed).is_err() {
        return Ok(Verified::No);
    }
    if weaker_than(&parsed, cost) {
        return Ok(Verified::YesRehashed(hash_with(cost, password)?));
    }
    Ok(Verified::Yes)
}

fn weaker_than(parsed: &PasswordHash<'_>, cost: PasswordCost) -> bool {
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return true;
    }
    match Params::try_from(parsed) {
        Ok(params) => {
            params.m_cost() < cost.memory_kib || params.t_cost() < cost.iterations || params.p_cost() < cost.parallelism
        }
        Err(_) => true,
    }
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_the_field_and_the_rule() {
        let short = check_policy("password", "abc", "bob").unwrap_err().to_string();
        assert_eq!(short, "password: must be at least 8 characters");
        assert!(check_policy("password", "12345678901", "bob").is_err());
        assert!(check_policy("new_password", "BobBobBob", "bobbobbob").is_err());
        assert!(check_policy("password", "correct horse", "bob").is_ok());
        assert!(check_policy("password", &"x".repeat(MAX_BYTES + 1), "bob").is_err());
    }

    #[test]
    fn hashes_are_argon2id_phc_with_the_configured_cost() {
        let phc = hash_with(PasswordCost::OWASP, "correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(verify_with(PasswordCost::OWASP, "correct horse", &phc).unwrap(), Verified::Yes);
        assert_eq!(verify_with(PasswordCost::OWASP, "wrong horse", &phc).unwrap(), Verified::No);
    }

    #[test]
    fn a_raised_cost_rehashes_on_a_right_password_only() {
        let phc = hash_with(PasswordCost::OWASP, "correct horse").unwrap();
        let raised = PasswordCost { iterations: 3, ..PasswordCost::OWASP };
        match verify_with(raised, "correct horse", &phc).unwrap() {
            Verified::YesRehashed(new) => assert!(new.contains("t=3"), "{new}"),
            other => panic!("expected a rehash, got {other:?}"),
        }
        assert_eq!(verify_with(raised, "wrong horse", &phc).unwrap(), Verified::No);
    }
}
