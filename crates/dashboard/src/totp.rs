//! TOTP second factors (RFC 6238: SHA-1, 6 digits, 30-second steps, one step of clock skew
//! either way — what every authenticator app does).
//!
//! The 160-bit shared secret is sealed by the vault under a data key of its own, bound to
//! `totp:{user_id}` (`DekHolder::TotpSecret`), so a copy of the database without the keyring
//! reveals no secret and master-key rotation re-wraps it like every other data key. Each
//! accepted code records its step in the database, so a code works once, on any replica. The
//! enrolment page shows the `otpauth://` URI as a QR code (an inline SVG drawn from
//! `qrcodegen`; no image library, no script) and the secret in base32 to type by hand.

use store::sealed::DekHolder;
use store::sign_in::StoredTotp;
use totp_rs::{Algorithm, Builder, Secret, Totp};
use vault::{SecretBytes, WrappedDek};

use crate::Dashboard;
use crate::error::DashboardError;

/// The vault field name the secret is sealed under.
const FIELD: &str = "totp_secret";
/// Seconds per step.
pub const STEP_SECS: u64 = 30;
/// The issuer shown in authenticator apps.
const ISSUER: &str = "wxhub";

/// What the enrolment page shows.
pub struct Enrolment {
    /// The secret in base32, in groups of four for typing into an app (apps ignore spaces).
    pub secret_base32: String,
    /// The `otpauth://` URI the QR code holds.
    pub uri: String,
    /// The QR code as an SVG element.
    pub qr_svg: String,
}

fn build(secret: &[u8], email: &str) -> Result<Totp, DashboardError> {
    // `:` separates issuer and account in the URI; an email has none, but be sure.
    let account = email.replace(':', "");
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(STEP_SECS)
        .with_secret(Secret::from(secret.to_vec()))
        .with_account_name(account)
        .with_issuer(Some(ISSUER))
        .build()
        .map_err(|_| DashboardError::Internal("cannot build a TOTP"))
}

/// The step a code is right for at `now_ms`, if it is right.
pub fn check_code(secret: &[u8], code: &str, now_ms: i64) -> Option<i64> {
    let totp = build(secret, "x").ok()?;
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let now = u64::try_from(now_ms / 1000).ok()?;
    totp.check(&code, now)
        .and_then(|step| i64::try_from(step).ok())
}

/// The code of `secret` at `now_ms` (tests play the authenticator app with this).
pub fn code_at(secret: &[u8], now_ms: i64) -> String {
    build(secret, "x")
        .map(|t| {
            t.generate(u64::try_from(now_ms / 1000).unwrap_or(0))
                .to_string()
        })
        .unwrap_or_default()
}

/// Decodes a base32 secret as the enrolment page shows it (spaces allowed).
pub fn secret_from_base32(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    Secret::try_from_base32(compact)
        .ok()
        .map(|s| s.as_bytes().to_vec())
}

fn grouped(base32: &str) -> String {
    let chars: Vec<char> = base32.trim_end_matches('=').chars().collect();
    chars
        .chunks(4)
        .map(|chunk| chunk.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

fn qr_svg(text: &str) -> Result<String, DashboardError> {
    let qr = qrcodegen::QrCode::encode_text(text, qrcodegen::QrCodeEcc::Medium)
        .map_err(|_| DashboardError::Internal("the TOTP URI is too long for a QR code"))?;
    let border = 4;
    let size = qr.size() + 2 * border;
    let mut path = String::new();
    for y in 0..qr.size() {
        for x in 0..qr.size() {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + border, y + border));
            }
        }
    }
    // Dark on light whatever the colour scheme: scanners expect it.
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" \
         shape-rendering=\"crispEdges\" class=\"qr\" aria-hidden=\"true\">\
         <rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/>\
         <path d=\"{path}\" fill=\"#000\"/></svg>"
    ))
}

impl Dashboard {
    /// Starts (or restarts) `user`'s enrolment with a fresh secret. Returns `false` when they
    /// have a confirmed one already.
    pub(crate) async fn begin_totp(&self, user_id: &str) -> Result<bool, DashboardError> {
        let mut bytes = [0u8; 20];
        rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut bytes)
            .map_err(|_| DashboardError::Internal("the system random source failed"))?;
        let subject = DekHolder::TotpSecret.vault_subject(user_id);
        let vault = self.inner().vault.current();
        let (dek, wrapped) = vault.create_dek(&subject);
        let sealed = StoredTotp {
            user_id: user_id.to_owned(),
            secret: dek.encrypt(&subject, FIELD, &bytes),
            dek_kek_id: wrapped.kek_id().to_owned(),
            wrapped_dek: wrapped.into_bytes(),
            confirmed_at: None,
            last_used_step: 0,
            created_at: self.now(),
        };
        bytes.fill(0);
        Ok(self
            .tenancy()
            .store()
            .begin_totp_enrolment(&sealed, self.now())
            .await?)
    }

    /// The person's stored TOTP and its opened secret.
    pub(crate) async fn open_totp(
        &self,
        user_id: &str,
    ) -> Result<Option<(StoredTotp, SecretBytes)>, DashboardError> {
        let Some(stored) = self.tenancy().store().user_totp(user_id).await? else {
            return Ok(None);
        };
        let subject = DekHolder::TotpSecret.vault_subject(user_id);
        let sealed = |_| DashboardError::Internal("a TOTP secret does not open");
        let vault = self.inner().vault.for_kek(&stored.dek_kek_id);
        let wrapped = WrappedDek::from_bytes(stored.wrapped_dek.clone()).map_err(sealed)?;
        let dek = vault.unwrap_dek(&subject, &wrapped).map_err(sealed)?;
        let secret = dek
            .decrypt(&subject, FIELD, &stored.secret)
            .map_err(sealed)?;
        Ok(Some((stored, secret)))
    }

    /// What the enrolment page shows for a pending secret.
    pub(crate) fn enrolment(
        &self,
        secret: &SecretBytes,
        email: &str,
    ) -> Result<Enrolment, DashboardError> {
        let totp = build(secret.expose(), email)?;
        let uri = totp
            .to_url()
            .map_err(|_| DashboardError::Internal("cannot write the TOTP URI"))?;
        Ok(Enrolment {
            secret_base32: grouped(&totp.secret().to_base32()),
            qr_svg: qr_svg(&uri)?,
            uri,
        })
    }

    /// Whether `code` signs `user_id` in: right for their confirmed secret now, and of a step
    /// not used before.
    pub(crate) async fn accept_sign_in_code(
        &self,
        user_id: &str,
        code: &str,
    ) -> Result<bool, DashboardError> {
        let Some((stored, secret)) = self.open_totp(user_id).await? else {
            return Ok(false);
        };
        if stored.confirmed_at.is_none() {
            return Ok(false);
        }
        match check_code(secret.expose(), code, self.now()) {
            Some(step) => Ok(self.tenancy().store().use_totp_step(user_id, step).await?),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_right_for_its_step_and_the_next() {
        let secret = b"12345678901234567890";
        // RFC 6238 appendix B, SHA-1, T = 59 s: 94287082 (8 digits); its last 6 here.
        assert_eq!(code_at(secret, 59_000), "287082");
        assert_eq!(check_code(secret, "287082", 59_000), Some(1));
        assert_eq!(check_code(secret, "287 082", 89_000), Some(1));
        assert_eq!(check_code(secret, "287082", 120_000), None);
        assert_eq!(check_code(secret, "000000", 59_000), None);
    }

    #[test]
    fn the_qr_code_is_an_svg_without_script_or_style() {
        let svg = qr_svg("otpauth://totp/wxhub:a%40b.c?secret=ABC&issuer=wxhub").unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(!svg.contains("script") && !svg.contains("style="));
    }
}
