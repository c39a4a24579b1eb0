//! Transit's endpoints below its mount, Vault's paths and shapes: `keys/…`, `encrypt`,
//! `decrypt`, `rewrap`, `datakey`, `hmac`, `sign`, `verify`, `random`, `hash`.
//!
//! Every handler checks the ACL before it reads a key, so a token without the policy learns
//! nothing (not even whether the key exists). Batch requests (`batch_input`) answer every
//! item: an item's bad input becomes its `error`, and the whole answer is then a 400 that
//! still carries `batch_results` (or `partial_failure_response_code` when some succeeded), as
//! in Vault.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::crypto::{self, HashAlg, Marshaling};
use super::keys::{check_name, Key, KeyType, Keys, NewKey, MIN_AUTO_ROTATE};
use crate::api::{
    as_bool, as_duration, as_str, as_u64, field, Operation, Result, VaultError, VaultResponse,
};
use crate::mounts::MountEntry;
use crate::router::Ctx;

/// Most items in one `batch_input`.
pub(crate) const MAX_BATCH: usize = 1000;
/// Most bytes `random/` returns at once.
const MAX_RANDOM: u64 = 128 * 1024;

type Item = Map<String, Value>;

pub(crate) async fn handle(ctx: &Ctx<'_>, mount: &MountEntry, rest: &str) -> Result<VaultResponse> {
    let keys = Keys::new(ctx.vault, mount.data_prefix());
    let segs: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    let op = ctx.req.op;
    match (segs.as_slice(), op) {
        (["keys"], Operation::List) => {
            ctx.require_op()?;
            crate::kv::list_level(ctx.vault, &keys.prefix(), "").await
        }
        (["keys", name], Operation::Read) => {
            ctx.require_op()?;
            let key = keys
                .load(check_name(name)?)
                .await?
                .ok_or(VaultError::NotFound)?;
            Ok(VaultResponse::data(key.to_json()))
        }
        (["keys", name], Operation::Write) => create_key(ctx, &keys, name).await,
        (["keys", name], Operation::Delete) => {
            ctx.require_op()?;
            delete_key(ctx, &keys, check_name(name)?).await
        }
        (["keys", name, "config"], Operation::Write) => {
            ctx.require_op()?;
            config_key(ctx, &keys, check_name(name)?).await
        }
        (["keys", name, "rotate"], Operation::Write) => {
            ctx.require_op()?;
            let name = check_name(name)?;
            let _g = keys.lock(name).await;
            let mut key = load_owned(&keys, name, "key not found").await?;
            key.rotate(ctx.vault.now())?;
            keys.save(&key).await?;
            Ok(VaultResponse::data(key.to_json()))
        }
        (["encrypt", name], Operation::Write) => encrypt(ctx, &keys, name).await,
        (["decrypt", name], Operation::Write) => {
            ctx.require_op()?;
            decrypt(ctx, &keys, check_name(name)?).await
        }
        (["rewrap", name], Operation::Write) => {
            ctx.require_op()?;
            rewrap(ctx, &keys, check_name(name)?).await
        }
        (["datakey", kind, name], Operation::Write) => {
            ctx.require_op()?;
            datakey(ctx, &keys, kind, check_name(name)?).await
        }
        (["hmac", name, alg @ ..], Operation::Write) if alg.len() <= 1 => {
            ctx.require_op()?;
            hmac(ctx, &keys, check_name(name)?, alg.first().copied()).await
        }
        (["sign", name, alg @ ..], Operation::Write) if alg.len() <= 1 => {
            ctx.require_op()?;
            sign(ctx, &keys, check_name(name)?, alg.first().copied()).await
        }
        (["verify", name, alg @ ..], Operation::Write) if alg.len() <= 1 => {
            ctx.require_op()?;
            verify(ctx, &keys, check_name(name)?, alg.first().copied()).await
        }
        (["random", args @ ..], Operation::Write) if args.len() <= 2 => {
            ctx.require_op()?;
            random(ctx, args)
        }
        (["hash", alg @ ..], Operation::Write) if alg.len() <= 1 => {
            ctx.require_op()?;
            hash(ctx, alg.first().copied())
        }
        _ if known_path(&segs) => {
            ctx.require_op()?;
            Err(VaultError::MethodNotAllowed)
        }
        _ => {
            ctx.require_op()?;
            Err(VaultError::NoHandler(ctx.req.path.clone()))
        }
    }
}

/// Whether the path is one of transit's (for a 405 rather than a 404 on a wrong method).
fn known_path(segs: &[&str]) -> bool {
    matches!(
        segs,
        ["keys"]
            | ["keys", _]
            | ["keys", _, "config" | "rotate"]
            | ["encrypt" | "decrypt" | "rewrap", _]
            | ["datakey", _, _]
            | ["hmac" | "sign" | "verify", _]
            | ["hmac" | "sign" | "verify", _, _]
            | ["random"]
            | ["random", _]
            | ["random", _, _]
            | ["hash"]
            | ["hash", _]
    )
}

// ---------------------------------------------------------------------------------------
// Parameters

fn opt_str<'a>(m: &'a Item, name: &str) -> Result<Option<&'a str>> {
    field(m, name).map(|v| as_str(v, name)).transpose()
}

fn opt_bool(m: &Item, name: &str) -> Result<Option<bool>> {
    field(m, name).map(|v| as_bool(v, name)).transpose()
}

fn opt_u64(m: &Item, name: &str) -> Result<Option<u64>> {
    field(m, name).map(|v| as_u64(v, name)).transpose()
}

/// A base64 parameter, decoded.
fn opt_b64(m: &Item, name: &str) -> Result<Option<Vec<u8>>> {
    opt_str(m, name)?
        .map(|s| crypto::decode_b64(s, name))
        .transpose()
}

/// Refuses parameters for features Warden's transit does not have, instead of ignoring them.
fn refuse_unsupported(m: &Item) -> Result<()> {
    if opt_str(m, "nonce")?.is_some_and(|n| !n.is_empty()) {
        return Err(VaultError::BadRequest(
            "nonce is only used with convergent encryption, which Warden's transit does not \
             offer"
                .into(),
        ));
    }
    Ok(())
}

/// `batch_input`, if given: 1 to [`MAX_BATCH`] objects.
fn batch_input(body: &Item) -> Result<Option<Vec<Item>>> {
    let Some(v) = field(body, "batch_input") else {
        return Ok(None);
    };
    let Value::Array(items) = v else {
        return Err(VaultError::bad_param("batch_input", "a list of objects"));
    };
    if items.is_empty() {
        return Err(VaultError::BadRequest(
            "missing batch input to process".into(),
        ));
    }
    if items.len() > MAX_BATCH {
        return Err(VaultError::BadRequest(format!(
            "batch_input has {} items; at most {MAX_BATCH} are allowed",
            items.len()
        )));
    }
    items
        .iter()
        .map(|i| match i {
            Value::Object(m) => Ok(m.clone()),
            _ => Err(VaultError::bad_param("batch_input", "a list of objects")),
        })
        .collect::<Result<_>>()
        .map(Some)
}

/// Runs `f` on the request (one item) or on each batch item, and answers as Vault does.
fn run(ctx: &Ctx<'_>, f: impl Fn(&Item) -> Result<Item>) -> Result<VaultResponse> {
    let body = &ctx.req.body;
    let Some(items) = batch_input(body)? else {
        return f(body).map(|m| VaultResponse::data(Value::Object(m)));
    };
    let (mut ok, mut bad) = (0usize, 0usize);
    let mut results = Vec::with_capacity(items.len());
    for item in &items {
        let reference = field(item, "reference").cloned().unwrap_or(json!(""));
        let mut out = match f(item) {
            Ok(m) => {
                ok += 1;
                m
            }
            Err(VaultError::BadRequest(msg)) => {
                bad += 1;
                let mut m = Map::new();
                m.insert("error".into(), Value::String(msg));
                m
            }
            Err(other) => return Err(other),
        };
        out.insert("reference".into(), reference);
        results.push(Value::Object(out));
    }
    let mut resp = VaultResponse::data(json!({ "batch_results": results }));
    if bad > 0 {
        let mut status = StatusCode::BAD_REQUEST;
        if ok > 0 {
            if let Some(code) = opt_u64(body, "partial_failure_response_code")? {
                match u16::try_from(code)
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                {
                    Some(s) if (100..=599).contains(&code) => status = s,
                    _ => resp.warnings.push(format!(
                        "partial_failure_response_code {code} is not an HTTP status; 400 used"
                    )),
                }
            }
        }
        resp.status = Some(status);
    }
    Ok(resp)
}

fn obj(v: Value) -> Item {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Keys

async fn load_owned(keys: &Keys<'_>, name: &str, missing: &str) -> Result<Key> {
    keys.load(name)
        .await?
        .map(|k| (*k).clone())
        .ok_or_else(|| VaultError::BadRequest(missing.to_owned()))
}

/// The key for an operation that makes new output (encrypt, sign, hmac, …): rotated first if
/// its `auto_rotate_period` has passed.
async fn key_for_use(
    ctx: &Ctx<'_>,
    keys: &Keys<'_>,
    name: &str,
    missing: &str,
) -> Result<Arc<Key>> {
    let key = keys
        .load(name)
        .await?
        .ok_or_else(|| VaultError::BadRequest(missing.to_owned()))?;
    let now = ctx.vault.now();
    if !key.rotation_due(now) {
        return Ok(key);
    }
    let _g = keys.lock(name).await;
    let mut fresh = load_owned(keys, name, missing).await?;
    if fresh.rotation_due(now) {
        fresh.rotate(now)?;
        keys.save(&fresh).await?;
    }
    Ok(Arc::new(fresh))
}

fn new_key_spec(body: &Item, default_derived: bool) -> Result<NewKey> {
    let kind = KeyType::parse(opt_str(body, "type")?.unwrap_or("aes256-gcm96"))?;
    if opt_bool(body, "convergent_encryption")? == Some(true) {
        return Err(VaultError::BadRequest(
            "convergent encryption is not offered by Warden's transit".into(),
        ));
    }
    refuse_flags(body)?;
    let auto_rotate_period = auto_rotate(body)?.unwrap_or(0);
    Ok(NewKey {
        kind,
        derived: opt_bool(body, "derived")?.unwrap_or(default_derived),
        key_size: opt_u64(body, "key_size")?,
        auto_rotate_period,
    })
}

/// `exportable` and `allow_plaintext_backup`: key material never leaves Warden.
fn refuse_flags(body: &Item) -> Result<()> {
    for flag in ["exportable", "allow_plaintext_backup"] {
        if opt_bool(body, flag)? == Some(true) {
            return Err(VaultError::BadRequest(format!(
                "{flag} is not offered by Warden's transit: key material never leaves the vault"
            )));
        }
    }
    Ok(())
}

fn auto_rotate(body: &Item) -> Result<Option<u64>> {
    let Some(v) = field(body, "auto_rotate_period") else {
        return Ok(None);
    };
    let secs = as_duration(v, "auto_rotate_period")?;
    if secs != 0 && secs < MIN_AUTO_ROTATE {
        return Err(VaultError::BadRequest(
            "auto rotate period must be 0 to disable or at least an hour".into(),
        ));
    }
    Ok(Some(secs))
}

async fn create_key(ctx: &Ctx<'_>, keys: &Keys<'_>, name: &str) -> Result<VaultResponse> {
    ctx.require_write(|| async {
        let name = check_name(name)?;
        Ok(keys.load(name).await?.is_some())
    })
    .await?;
    let name = check_name(name)?;
    let spec = new_key_spec(&ctx.req.body, false)?;
    let _g = keys.lock(name).await;
    if let Some(existing) = keys.load(name).await? {
        let mut r = VaultResponse::data(existing.to_json());
        r.warnings.push(format!("key {name} already existed"));
        return Ok(r);
    }
    let key = Key::create(name, spec, ctx.vault.now())?;
    keys.save(&key).await?;
    Ok(VaultResponse::data(key.to_json()))
}

async fn delete_key(_ctx: &Ctx<'_>, keys: &Keys<'_>, name: &str) -> Result<VaultResponse> {
    let _g = keys.lock(name).await;
    let key = load_owned(keys, name, "could not delete key; not found").await?;
    if !key.deletion_allowed {
        return Err(VaultError::BadRequest(
            "deletion is not allowed for this key".into(),
        ));
    }
    keys.delete(name).await?;
    Ok(VaultResponse::no_content())
}

async fn config_key(ctx: &Ctx<'_>, keys: &Keys<'_>, name: &str) -> Result<VaultResponse> {
    let body = &ctx.req.body;
    refuse_flags(body)?;
    let min_dec = opt_u64(body, "min_decryption_version")?;
    let min_enc = opt_u64(body, "min_encryption_version")?;
    let deletion_allowed = opt_bool(body, "deletion_allowed")?;
    let rotate = auto_rotate(body)?;
    let _g = keys.lock(name).await;
    let mut key = load_owned(
        keys,
        name,
        &format!("no existing key named {name} could be found"),
    )
    .await?;
    let latest = u64::from(key.latest_version);
    let mut warnings = Vec::new();
    if let Some(mut v) = min_dec {
        if v == 0 {
            v = 1;
            warnings.push("key versions start at 1; min_decryption_version set to 1".to_owned());
        }
        if v > latest {
            return Err(VaultError::BadRequest(format!(
                "cannot set min decryption version of {v}, latest key version is {latest}"
            )));
        }
        key.min_decryption_version = v as u32;
    }
    if let Some(v) = min_enc {
        if v > latest {
            return Err(VaultError::BadRequest(format!(
                "cannot set min encryption version of {v}, latest key version is {latest}"
            )));
        }
        key.min_encryption_version = v as u32;
    }
    if key.min_encryption_version > 0 && key.min_encryption_version < key.min_decryption_version {
        return Err(VaultError::BadRequest(
            "min encryption version should not be less than min decryption version".into(),
        ));
    }
    if let Some(d) = deletion_allowed {
        key.deletion_allowed = d;
    }
    if let Some(p) = rotate {
        key.auto_rotate_period = p;
    }
    keys.save(&key).await?;
    let mut r = VaultResponse::data(key.to_json());
    r.warnings = warnings;
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// Encryption

fn need_encryption(key: &Key) -> Result<()> {
    if key.kind.encrypts() {
        Ok(())
    } else {
        Err(VaultError::BadRequest(format!(
            "key type {} does not support encryption",
            key.kind.name()
        )))
    }
}

/// Encrypts `plaintext` (raw bytes) with `version` (0 = latest).
fn encrypt_bytes(
    key: &Key,
    version: u64,
    context: Option<&[u8]>,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Item> {
    let (n, v) = key.version_for_use(version)?;
    let material = key.material(v, context)?;
    let blob = crypto::seal(key.kind, &material.0, aad, plaintext)?;
    Ok(obj(json!({
        "ciphertext": crypto::format_versioned(n, &crypto::encode_b64(&blob)),
        "key_version": n,
    })))
}

/// Decrypts a `vault:v<N>:…` ciphertext to raw bytes.
fn decrypt_bytes(
    key: &Key,
    ciphertext: &str,
    context: Option<&[u8]>,
    aad: &[u8],
) -> Result<Vec<u8>> {
    let (n, body) = crypto::parse_versioned(ciphertext, "ciphertext")?;
    let blob = crypto::decode_b64(body, "ciphertext").map_err(|_| {
        VaultError::BadRequest("invalid ciphertext: could not decode base64".into())
    })?;
    let v = key.version_for_check(n)?;
    let material = key.material(v, context)?;
    crypto::open(key.kind, &material.0, aad, &blob)
}

fn aad(item: &Item) -> Result<Vec<u8>> {
    Ok(opt_b64(item, "associated_data")?.unwrap_or_default())
}

async fn encrypt(ctx: &Ctx<'_>, keys: &Keys<'_>, name: &str) -> Result<VaultResponse> {
    // Vault's upsert: a missing key is created, which takes `create` on this path.
    ctx.require_write(|| async {
        let name = check_name(name)?;
        Ok(keys.load(name).await?.is_some())
    })
    .await?;
    let name = check_name(name)?;
    let body = &ctx.req.body;
    if keys.load(name).await?.is_none() {
        let first_has_context = match batch_input(body)? {
            Some(items) => items.first().is_some_and(|i| field(i, "context").is_some()),
            None => field(body, "context").is_some(),
        };
        let spec = new_key_spec(body, first_has_context)?;
        if !spec.kind.encrypts() {
            return Err(VaultError::BadRequest(format!(
                "key type {} does not support encryption",
                spec.kind.name()
            )));
        }
        let _g = keys.lock(name).await;
        if keys.load(name).await?.is_none() {
            let key = Key::create(name, spec, ctx.vault.now())?;
            keys.save(&key).await?;
        }
    }
    let key = key_for_use(ctx, keys, name, "encryption key not found").await?;
    need_encryption(&key)?;
    let top_version = opt_u64(body, "key_version")?;
    run(ctx, |item| {
        refuse_unsupported(item)?;
        let plaintext = opt_str(item, "plaintext")?
            .ok_or_else(|| VaultError::BadRequest("missing plaintext to encrypt".into()))?;
        let plaintext = crypto::decode_b64(plaintext, "plaintext")?;
        let context = opt_b64(item, "context")?;
        let version = opt_u64(item, "key_version")?.or(top_version).unwrap_or(0);
        encrypt_bytes(&key, version, context.as_deref(), &aad(item)?, &plaintext)
    })
}

async fn decrypt(ctx: &Ctx<'_>, keys: &Keys<'_>, name: &str) -> Result<VaultResponse> {
    let key = keys
        .load(name)
        .await?
        .ok_or_else(|| VaultError::BadRequest("encryption key not found".into()))?;
    need_encryption(&key)?;
    run(ctx, |item| {
        refuse_unsupported(item)?;
        let ct = opt_str(item, "ciphertext")?
            .ok_or_else(|| VaultError::BadRequest("missing ciphertext to decrypt".into()))?;
        let context = opt_b64(item, "context")?;
        let plain = decrypt_bytes(&key, ct, context.as_deref(), &aad(item)?)?;
        Ok(obj(json!({ "plaintext": crypto::encode_b64(&plain) })))
    })
}

async fn rewrap(ctx: &Ctx<'_>, keys: &Keys<'_>, name: &str) -> Result<VaultResponse> {
    let key = key_for_use(ctx, keys, name, "encryption key not found").await?;
    need_encryption(&key)?;
    let top_version = opt_u64(&ctx.req.body, "key_version")?;
    run(ctx, |item| {
        refuse_unsupported(item)?;
        let ct = opt_str(item, "ciphertext")?
            .ok_or_else(|| VaultError::BadRequest("missing ciphertext to rewrap".into()))?;
        let context = opt_b64(item, "context")?;
        let aad = aad(item)?;
        let plain = decrypt_bytes(&key, ct, context.as_deref(), &aad)?;
        let version = opt_u64(item, "key_version")?.or(top_version).unwrap_or(0);
        encrypt_bytes(&key, version, context.as_deref(), &aad, &plain)
    })
}

async fn datakey(ctx: &Ctx<'_>, keys: &Keys<'_>, kind: &str, name: &str) -> Result<VaultResponse> {
    let body = &ctx.req.body;
    let with_plaintext = match kind {
        "plaintext" => true,
        "wrapped" => false,
        other => {
            return Err(VaultError::BadRequest(format!(
                "invalid data key type {other:?}: use plaintext or wrapped"
            )))
        }
    };
    refuse_unsupported(body)?;
    let bits = opt_u64(body, "bits")?.unwrap_or(256);
    if ![128, 256, 512].contains(&bits) {
        return Err(VaultError::BadRequest(
            "invalid bits length: use 128, 256 or 512".into(),
        ));
    }
    let key = key_for_use(ctx, keys, name, "encryption key not found").await?;
    need_encryption(&key)?;
    let context = opt_b64(body, "context")?;
    let version = opt_u64(body, "key_version")?.unwrap_or(0);
    // The ciphertext holds the raw key, so `decrypt` answers the same base64 string
    // `plaintext` holds (as in Vault).
    let mut raw = zeroize::Zeroizing::new(vec![0u8; (bits / 8) as usize]);
    crate::util::fill_random(&mut raw);
    let mut out = encrypt_bytes(&key, version, context.as_deref(), &[], &raw)?;
    if with_plaintext {
        out.insert("plaintext".into(), Value::String(crypto::encode_b64(&raw)));
    }
    Ok(VaultResponse::data(Value::Object(out)))
}

// ---------------------------------------------------------------------------------------
// HMAC, signatures

fn path_or_param<'a>(
    path: Option<&'a str>,
    body: &'a Item,
    names: &[&str],
) -> Result<Option<&'a str>> {
    if let Some(p) = path {
        return Ok(Some(p));
    }
    for n in names {
        if let Some(v) = opt_str(body, n)? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

fn input(item: &Item) -> Result<Vec<u8>> {
    let s =
        opt_str(item, "input")?.ok_or_else(|| VaultError::BadRequest("missing input".into()))?;
    crypto::decode_b64(s, "input")
}

async fn hmac(
    ctx: &Ctx<'_>,
    keys: &Keys<'_>,
    name: &str,
    alg: Option<&str>,
) -> Result<VaultResponse> {
    let body = &ctx.req.body;
    let alg = HashAlg::parse(path_or_param(alg, body, &["algorithm"])?)?;
    let key = key_for_use(ctx, keys, name, "encryption key not found").await?;
    let top_version = opt_u64(body, "key_version")?;
    run(ctx, |item| {
        let input = input(item)?;
        let version = opt_u64(item, "key_version")?.or(top_version).unwrap_or(0);
        let (n, v) = key.version_for_use(version)?;
        let tag = crypto::hmac_sign(alg, key.hmac_key(v), &input);
        Ok(obj(json!({
            "hmac": crypto::format_versioned(n, &crypto::encode_b64(&tag)),
        })))
    })
}

fn need_signing(key: &Key) -> Result<()> {
    if key.kind.signs() {
        Ok(())
    } else {
        Err(VaultError::BadRequest(format!(
            "key type {} does not support signing",
            key.kind.name()
        )))
    }
}

/// The checks `sign` and `verify` share: no `prehashed` input (ring signs messages, not
/// digests), and ECDSA only with SHA-256.
fn signing_options(key: &Key, body: &Item, alg: Option<&str>) -> Result<Marshaling> {
    if opt_bool(body, "prehashed")? == Some(true) {
        return Err(VaultError::BadRequest(
            "prehashed input is not supported by Warden's transit: send the message itself".into(),
        ));
    }
    if let Some(sa) = opt_str(body, "signature_algorithm")? {
        if !sa.is_empty() {
            return Err(VaultError::BadRequest(
                "signature_algorithm applies to RSA keys, which Warden's transit does not have"
                    .into(),
            ));
        }
    }
    let alg = path_or_param(alg, body, &["hash_algorithm", "algorithm"])?;
    if key.kind == KeyType::EcdsaP256 {
        if HashAlg::parse(alg)? != HashAlg::Sha256 {
            return Err(VaultError::BadRequest(
                "ecdsa-p256 keys sign with sha2-256 in Warden's transit".into(),
            ));
        }
    } else if let Some(a) = alg {
        // Ed25519 hashes internally; Vault ignores the algorithm, but a bad name is an error.
        HashAlg::parse(Some(a))?;
    }
    Marshaling::parse(opt_str(body, "marshaling_algorithm")?)
}

async fn sign(
    ctx: &Ctx<'_>,
    keys: &Keys<'_>,
    name: &str,
    alg: Option<&str>,
) -> Result<VaultResponse> {
    let body = &ctx.req.body;
    let key = key_for_use(ctx, keys, name, "signing key not found").await?;
    need_signing(&key)?;
    let marshaling = signing_options(&key, body, alg)?;
    let top_version = opt_u64(body, "key_version")?;
    run(ctx, |item| {
        let input = input(item)?;
        let version = opt_u64(item, "key_version")?.or(top_version).unwrap_or(0);
        let (n, v) = key.version_for_use(version)?;
        let context = opt_b64(item, "context")?;
        let material = key.material(v, context.as_deref())?;
        let sig = crypto::sign(key.kind, &material.0, &input, marshaling)?;
        Ok(obj(json!({
            "signature": crypto::format_versioned(n, &marshaling.encode(&sig)),
            "key_version": n,
        })))
    })
}

async fn verify(
    ctx: &Ctx<'_>,
    keys: &Keys<'_>,
    name: &str,
    alg: Option<&str>,
) -> Result<VaultResponse> {
    let body = &ctx.req.body;
    let key = keys
        .load(name)
        .await?
        .ok_or_else(|| VaultError::BadRequest("signature verification key not found".into()))?;
    // Checked once for the request: whether this is an HMAC or a signature check, and the
    // signing options (for signatures).
    let first = match batch_input(body)? {
        Some(items) => items.into_iter().next().unwrap_or_default(),
        None => body.clone(),
    };
    let is_hmac = field(&first, "hmac").is_some();
    let hmac_alg = HashAlg::parse(path_or_param(alg, body, &["algorithm", "hash_algorithm"])?);
    let marshaling = if is_hmac {
        None
    } else {
        need_signing(&key)?;
        Some(signing_options(&key, body, alg)?)
    };
    let hmac_alg = if is_hmac { Some(hmac_alg?) } else { None };
    run(ctx, |item| {
        let input = input(item)?;
        let sig = opt_str(item, "signature")?;
        let tag = opt_str(item, "hmac")?;
        let valid = match (sig, tag, hmac_alg, marshaling) {
            (None, Some(tag), Some(alg), _) => {
                let (n, body) = crypto::parse_versioned(tag, "hmac")?;
                let v = key.version_for_check(n)?;
                let tag = crypto::decode_b64(body, "hmac")?;
                crypto::hmac_verify(alg, key.hmac_key(v), &input, &tag)
            }
            (Some(sig), None, _, Some(m)) => {
                let (n, body) = crypto::parse_versioned(sig, "signature")?;
                let v = key.version_for_check(n)?;
                let sig = m.decode(body)?;
                let context = opt_b64(item, "context")?;
                let material = key.material(v, context.as_deref())?;
                crypto::verify(key.kind, &material.0, &input, &sig, m)?
            }
            _ => {
                return Err(VaultError::BadRequest(
                    "exactly one of \"signature\" and \"hmac\" must be given (the same one \
                     for every batch item)"
                        .into(),
                ))
            }
        };
        Ok(obj(json!({ "valid": valid })))
    })
}

// ---------------------------------------------------------------------------------------
// Keyless: random, hash

fn output_format(body: &Item, default: &str) -> Result<String> {
    let f = opt_str(body, "format")?.unwrap_or(default);
    match f {
        "hex" | "base64" => Ok(f.to_owned()),
        other => Err(VaultError::BadRequest(format!(
            "unsupported encoding format {other:?}; must be \"hex\" or \"base64\""
        ))),
    }
}

fn encode_as(format: &str, b: &[u8]) -> String {
    if format == "hex" {
        crate::util::hex(b)
    } else {
        crypto::encode_b64(b)
    }
}

fn random(ctx: &Ctx<'_>, args: &[&str]) -> Result<VaultResponse> {
    let body = &ctx.req.body;
    // `random`, `random/:bytes`, `random/:source`, `random/:source/:bytes`.
    let (source, bytes_seg) = match args {
        [] => (None, None),
        [one] if one.bytes().all(|b| b.is_ascii_digit()) => (None, Some(*one)),
        [one] => (Some(*one), None),
        [s, n] => (Some(*s), Some(*n)),
        _ => (None, None),
    };
    if let Some(s) = source.or(opt_str(body, "source")?) {
        if !["platform", "seal", "all"].contains(&s) {
            return Err(VaultError::BadRequest(format!(
                "unsupported entropy source {s:?}; must be \"platform\", \"seal\" or \"all\""
            )));
        }
    }
    let n = match bytes_seg {
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| VaultError::bad_param("bytes", "a positive integer"))?,
        None => opt_u64(body, "bytes")?.unwrap_or(32),
    };
    if n == 0 || n > MAX_RANDOM {
        return Err(VaultError::BadRequest(format!(
            "bytes must be between 1 and {MAX_RANDOM}"
        )));
    }
    let format = output_format(body, "base64")?;
    let mut b = vec![0u8; n as usize];
    crate::util::fill_random(&mut b);
    Ok(VaultResponse::data(
        json!({ "random_bytes": encode_as(&format, &b) }),
    ))
}

fn hash(ctx: &Ctx<'_>, alg: Option<&str>) -> Result<VaultResponse> {
    let body = &ctx.req.body;
    let alg = HashAlg::parse(path_or_param(alg, body, &["algorithm"])?)?;
    let format = output_format(body, "hex")?;
    let input = input(body)?;
    Ok(VaultResponse::data(
        json!({ "sum": encode_as(&format, &crypto::hash(alg, &input)) }),
    ))
}
