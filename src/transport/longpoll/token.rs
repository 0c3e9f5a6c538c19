//! Long-poll session tokens: `base64url(id) "." base64url(HMAC-SHA256(id))`, signed with
//! a key derived from the secret key base, so a client can name its session but not
//! forge another's. Must not know what a session is beyond its id.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Why a request's token names no live session.
#[derive(Debug, thiserror::Error)]
pub(super) enum ResumeError {
    #[error("no token")]
    NoToken,
    #[error("malformed token")]
    Malformed,
    #[error("token with an invalid signature")]
    BadSignature,
    #[error("token of a session that no longer exists")]
    UnknownSession,
}

/// Signs and verifies tokens: `base64url(session id) "." base64url(HMAC-SHA256(id))`,
/// keyed with a key derived from the secret key base.
pub(super) struct Signer {
    mac: HmacSha256,
}

impl Signer {
    pub(super) fn new(secret: &[u8]) -> Self {
        // A key of its own for tokens, so the secret key base may serve other uses.
        let key = keyed(secret)
            .chain_update(b"fluxwire long-poll token")
            .finalize()
            .into_bytes();
        Signer { mac: keyed(&key) }
    }

    pub(super) fn sign(&self, id: Uuid) -> String {
        let tag = self.mac.clone().chain_update(id.as_bytes()).finalize();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(id.as_bytes()),
            URL_SAFE_NO_PAD.encode(tag.into_bytes())
        )
    }

    /// The session id a token names, if its signature holds (compared in constant time).
    pub(super) fn verify(&self, token: &str) -> Result<Uuid, ResumeError> {
        let (id, tag) = token.split_once('.').ok_or(ResumeError::Malformed)?;
        let id = URL_SAFE_NO_PAD
            .decode(id)
            .ok()
            .and_then(|bytes| Uuid::from_slice(&bytes).ok())
            .ok_or(ResumeError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| ResumeError::Malformed)?;
        self.mac
            .clone()
            .chain_update(id.as_bytes())
            .verify_slice(&tag)
            .map_err(|_| ResumeError::BadSignature)?;
        Ok(id)
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// 48 bytes from the OS's random source: three uuid v4, 366 random bits.
pub(super) fn random_secret() -> Vec<u8> {
    (0..3).flat_map(|_| Uuid::new_v4().into_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new("s".repeat(32).as_bytes())
    }

    #[test]
    fn tokens_round_trip_and_resist_tampering() {
        let signer = signer();
        let id = Uuid::new_v4();
        let token = signer.sign(id);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        assert_eq!(signer.verify(&token).unwrap(), id);

        let (id_part, tag_part) = token.split_once('.').unwrap();
        let other = URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes());
        assert!(matches!(
            signer.verify(&format!("{other}.{tag_part}")),
            Err(ResumeError::BadSignature)
        ));
        let mut tag = URL_SAFE_NO_PAD.decode(tag_part).unwrap();
        tag[0] ^= 1;
        let altered = format!("{id_part}.{}", URL_SAFE_NO_PAD.encode(tag));
        assert!(matches!(
            signer.verify(&altered),
            Err(ResumeError::BadSignature)
        ));
        for malformed in ["", ".", "abc", "abc.def", "!!.??", id_part] {
            assert!(signer.verify(malformed).is_err(), "{malformed:?}");
        }

        let other_secret = Signer::new(&[7; 32]);
        assert!(matches!(
            other_secret.verify(&token),
            Err(ResumeError::BadSignature)
        ));
    }
}
