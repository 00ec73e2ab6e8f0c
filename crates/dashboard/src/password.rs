//! Passwords: argon2id hashes, and the policy a new password must meet.
//!
//! The policy is NIST SP 800-63B's: at least 12 characters, any characters, no composition
//! rules, and not one of the common or breached passwords in `common-passwords.txt` (shipped in
//! the binary; the README says where it comes from). Hashing and verifying run on the blocking
//! pool: argon2id is deliberately slow and would otherwise stall the async workers. A sign-in
//! for an email nobody has still verifies against a dummy hash, so it takes as long as a wrong
//! password and says nothing about who exists.

use std::collections::HashSet;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::DashboardError;

/// The shortest password accepted, in characters.
pub const MIN_LENGTH: usize = 12;
/// The longest, so a megabyte of "password" costs no more than a normal one.
pub const MAX_LENGTH: usize = 256;

const COMMON: &str = include_str!("../common-passwords.txt");

/// argon2id's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    pub iterations: u32,
}

impl Default for HashingCost {
    /// OWASP's first recommendation for argon2id: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
        }
    }
}

/// Why a new password is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    TooShort,
    TooLong,
    /// On the list of common and breached passwords, or nearly one character repeated.
    Common,
    /// It contains the person's email or its local part.
    ContainsEmail,
    /// The two entries differ.
    Mismatch,
}

impl Problem {
    /// Every problem (the translation test walks these).
    pub const ALL: [Problem; 5] = [
        Problem::TooShort,
        Problem::TooLong,
        Problem::Common,
        Problem::ContainsEmail,
        Problem::Mismatch,
    ];

    /// The translation key of its explanation.
    pub fn key(self) -> &'static str {
        match self {
            Problem::TooShort => "password.too_short",
            Problem::TooLong => "password.too_long",
            Problem::Common => "password.common",
            Problem::ContainsEmail => "password.contains_email",
            Problem::Mismatch => "password.mismatch",
        }
    }
}

/// The hasher, the list and the dummy hash.
pub struct Passwords {
    argon: Argon2<'static>,
    common: HashSet<&'static str>,
    dummy: String,
}

impl Passwords {
    pub(crate) fn new(cost: HashingCost) -> Result<Self, argon2::Error> {
        let params = Params::new(cost.memory_kib, cost.iterations, 1, None)?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let common = COMMON
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let dummy = argon
            .hash_password(b"no one has this password; it only makes unknown emails slow")
            .map_err(|_| argon2::Error::OutputTooShort)?
            .to_string();
        Ok(Self {
            argon,
            common,
            dummy,
        })
    }

    /// Whether `password` (typed twice) may become the password of the person with `email`.
    pub fn check(&self, password: &str, again: &str, email: &str) -> Result<(), Problem> {
        let length = password.chars().count();
        if length < MIN_LENGTH {
            return Err(Problem::TooShort);
        }
        if length > MAX_LENGTH {
            return Err(Problem::TooLong);
        }
        let lower = password.to_lowercase();
        let distinct: HashSet<char> = lower.chars().collect();
        if self.common.contains(lower.as_str()) || distinct.len() < 4 {
            return Err(Problem::Common);
        }
        let email = email.trim().to_lowercase();
        let local = email.split('@').next().unwrap_or("");
        if !email.is_empty()
            && (lower.contains(&email) || (local.len() >= 4 && lower.contains(local)))
        {
            return Err(Problem::ContainsEmail);
        }
        if password != again {
            return Err(Problem::Mismatch);
        }
        Ok(())
    }

    /// The number of entries on the common-password list.
    pub fn common_count(&self) -> usize {
        self.common.len()
    }
}

/// The argon2id PHC string of `password`.
pub(crate) async fn hash(
    inner: std::sync::Arc<crate::Inner>,
    password: String,
) -> Result<String, DashboardError> {
    tokio::task::spawn_blocking(move || {
        inner
            .passwords
            .argon
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
    })
    .await
    .map_err(|_| DashboardError::Internal("password hashing stopped"))?
    .map_err(|_| DashboardError::Internal("password hashing failed"))
}

/// Whether `password` matches `stored` (a PHC string). `None`, or a stored value that is not
/// a PHC string (a person who never set a password), is checked against the dummy hash and
/// never matches.
pub(crate) async fn verify(
    inner: std::sync::Arc<crate::Inner>,
    stored: Option<String>,
    password: String,
) -> bool {
    tokio::task::spawn_blocking(move || {
        let passwords = &inner.passwords;
        let real = stored.as_deref().and_then(|s| PasswordHash::new(s).ok());
        let (hash, counts) = match real {
            Some(hash) => (hash, true),
            None => match PasswordHash::new(&passwords.dummy) {
                Ok(hash) => (hash, false),
                Err(_) => return false,
            },
        };
        let matches = passwords
            .argon
            .verify_password(password.as_bytes(), &hash)
            .is_ok();
        matches && counts
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passwords() -> Passwords {
        Passwords::new(HashingCost {
            memory_kib: 1024,
            iterations: 1,
        })
        .unwrap()
    }

    #[test]
    fn the_policy_wants_length_and_nothing_common() {
        let p = passwords();
        let ok = "correct horse battery";
        assert_eq!(p.check(ok, ok, "me@example.com"), Ok(()));
        assert_eq!(p.check("short", "short", ""), Err(Problem::TooShort));
        let long = "x".repeat(257) + "abcd";
        assert_eq!(p.check(&long, &long, ""), Err(Problem::TooLong));
        for common in [
            "Password1234",
            "qwertyuiop123",
            "111111111111",
            "abababababab",
        ] {
            assert_eq!(
                p.check(common, common, ""),
                Err(Problem::Common),
                "{common}"
            );
        }
        let mine = "alice.smith-2026!";
        assert_eq!(
            p.check(mine, mine, "alice.smith@example.com"),
            Err(Problem::ContainsEmail)
        );
        assert_eq!(p.check(ok, "other", ""), Err(Problem::Mismatch));
        assert!(p.common_count() >= 2000, "{}", p.common_count());
    }

    #[test]
    fn every_list_entry_could_otherwise_pass_the_length_rule() {
        let short: Vec<&str> = COMMON
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter(|l| l.chars().count() < MIN_LENGTH)
            .take(5)
            .collect();
        assert!(
            short.is_empty(),
            "entries the length rule already refuses: {short:?}"
        );
    }
}
