//! Password hashing with argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes, 1 lane, as
//! OWASP recommends).
//!
//! Hashing runs on a few dedicated threads (one per core), never on the async runtime. That also
//! bounds its memory: each hash needs 19 MiB, and on the unbounded blocking pool 64 concurrent
//! sign-ins held over 1 GiB (the allocator keeps freed blocks per thread). Requests queue instead.

use argon2::password_hash::{
    rand_core::OsRng, Output, ParamsString, PasswordHash, PasswordHasher, SaltString,
};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use ecommerce_platform::error::AppError;

type Job = Box<dyn FnOnce() + Send>;

fn hashing_threads() -> &'static std::sync::Mutex<std::sync::mpsc::Sender<Job>> {
    static POOL: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        for i in 0..n {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().expect("hashing queue").recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .expect("spawn a hashing thread");
        }
        std::sync::Mutex::new(tx)
    })
}

/// Runs `f` on a hashing thread.
async fn on_hashing_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, AppError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    hashing_threads()
        .lock()
        .expect("hashing queue")
        .send(Box::new(move || {
            let _ = tx.send(f());
        }))
        .map_err(|_| AppError::Internal("hashing threads are gone".into()))?;
    rx.await.map_err(|_| AppError::Internal("hashing thread panicked".into()))
}

thread_local! {
    /// The argon2 working memory of this hashing thread, allocated once and reused. Allocating
    /// 19 MiB per hash made glibc raise its mmap threshold and keep the freed blocks: the API grew
    /// to ~350 MiB after 64 sign-ups.
    static BLOCKS: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The raw argon2id output of `password` with `salt` under `params`, into `out`.
fn argon2_into(params: Params, password: &[u8], salt: &[u8], out: &mut [u8]) -> Result<(), argon2::Error> {
    let n = params.block_count();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        if blocks.len() < n {
            blocks.resize(n, Block::default());
        }
        argon.hash_password_into_with_memory(password, salt, out, &mut blocks[..n])
    })
}

fn hash_now(password: &[u8]) -> Result<String, AppError> {
    let fail = |e: &dyn std::fmt::Display| AppError::Internal(format!("hashing failed: {e}"));
    let params = Params::default();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(|e| fail(&e))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(params.clone(), password, salt_bytes, &mut out).map_err(|e| fail(&e))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| fail(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| fail(&e))?),
    };
    Ok(phc.to_string())
}

fn verify_now(password: &[u8], stored: &str) -> Result<bool, AppError> {
    let unreadable = |e: &dyn std::fmt::Display| AppError::Internal(format!("stored hash unreadable: {e}"));
    let parsed = PasswordHash::new(stored).map_err(|e| unreadable(&e))?;
    if parsed.algorithm != argon2::ARGON2ID_IDENT {
        return Err(AppError::Internal(format!("unexpected password hash algorithm {}", parsed.algorithm)));
    }
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(AppError::Internal("stored hash has no salt or digest".into()));
    };
    let params = Params::try_from(&parsed).map_err(|e| unreadable(&e))?;
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(|e| unreadable(&e))?;
    let mut out = vec![0u8; expected.len()];
    argon2_into(params, password, salt_bytes, &mut out).map_err(|e| unreadable(&e))?;
    // `Output`'s equality is constant-time.
    Ok(Output::new(&out).map_err(|e| unreadable(&e))? == expected)
}

pub async fn hash(password: String) -> Result<String, AppError> {
    on_hashing_thread(move || hash_now(password.as_bytes())).await?
}

/// Constant-time verification.
pub async fn verify(password: String, hash: String) -> Result<bool, AppError> {
    on_hashing_thread(move || verify_now(password.as_bytes(), &hash)).await?
}

/// A hash of a random password, verified against when the account does not exist, so a login for
/// an unknown e-mail takes as long as one with a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(b"not-a-real-password", &salt).expect("hash").to_string()
    })
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hashes_verify_and_are_argon2id() {
        let h = super::hash("correct horse".into()).await.unwrap();
        // argon2id, version 19, 19 MiB, 2 passes, 1 lane (OWASP's minimum for argon2id).
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(super::verify("correct horse".into(), h.clone()).await.unwrap());
        assert!(!super::verify("wrong horse".into(), h.clone()).await.unwrap());
        // Interchangeable with the argon2 crate's own PHC hashing, both ways.
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let parsed = super::PasswordHash::new(&h).unwrap();
        assert!(super::Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        let salt = super::SaltString::generate(&mut super::OsRng);
        let theirs = super::Argon2::default().hash_password(b"battery staple", &salt).unwrap().to_string();
        assert!(super::verify("battery staple".into(), theirs.clone()).await.unwrap());
        assert!(!super::verify("battery stapler".into(), theirs).await.unwrap());
    }
}
