//! The transit engine over a real socket: every key type, rotation and version policy,
//! rewrap, derived keys, data keys, HMAC, signatures, batches, deletion, ACLs, and keys
//! surviving a reopen of the store.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::both_backends;
use crate::common::{errors, Backend, TestVault};

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(s: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.as_str().unwrap())
        .unwrap()
}

/// `vault:vN:<base64>` with one bit of byte `at` of the decoded value flipped (standard
/// base64 unless `engine` says otherwise).
fn tamper(s: &str, at: usize, engine: Option<base64::engine::GeneralPurpose>) -> String {
    let engine = engine.unwrap_or(base64::engine::general_purpose::STANDARD);
    let (prefix, body) = s.rsplit_once(':').unwrap();
    let mut raw = engine.decode(body).unwrap();
    raw[at] ^= 0x01;
    format!("{prefix}:{}", engine.encode(raw))
}

async fn enable_transit(v: &TestVault) {
    let a = v
        .post("sys/mounts/transit", &v.root, json!({ "type": "transit" }))
        .await;
    assert_eq!(a.status, 204, "enable transit: {:?}", a.body);
}

async fn create(v: &TestVault, name: &str, body: Value) -> Value {
    let a = v.post(&format!("transit/keys/{name}"), &v.root, body).await;
    assert_eq!(a.status, 200, "create {name}: {:?}", a.body);
    a.json()
}

async fn encrypt(v: &TestVault, name: &str, body: Value) -> String {
    let a = v
        .post(&format!("transit/encrypt/{name}"), &v.root, body)
        .await;
    assert_eq!(a.status, 200, "encrypt {name}: {:?}", a.body);
    a.json()["data"]["ciphertext"].as_str().unwrap().to_owned()
}

async fn decrypt(v: &TestVault, name: &str, body: Value) -> (u16, Value) {
    let a = v
        .post(&format!("transit/decrypt/{name}"), &v.root, body)
        .await;
    (a.status, a.json())
}

async fn every_key_type_round_trips(b: Backend) {
    let v = TestVault::start(b).await;
    enable_transit(&v).await;
    // Encryption keys; the default type is aes256-gcm96.
    let k = create(&v, "default", json!({})).await;
    assert_eq!(k["data"]["type"], "aes256-gcm96");
    assert_eq!(k["mount_type"], "transit");
    for ty in ["aes256-gcm96", "chacha20-poly1305"] {
        create(&v, ty, json!({ "type": ty })).await;
        let ct = encrypt(&v, ty, json!({ "plaintext": b64(b"the quick brown fox") })).await;
        assert!(ct.starts_with("vault:v1:"), "{ct}");
        let ct2 = encrypt(&v, ty, json!({ "plaintext": b64(b"the quick brown fox") })).await;
        assert_ne!(ct, ct2, "a fresh nonce for every encryption");
        let (s, d) = decrypt(&v, ty, json!({ "ciphertext": ct })).await;
        assert_eq!(s, 200, "{d}");
        assert_eq!(unb64(&d["data"]["plaintext"]), b"the quick brown fox");
        // The read shape.
        let r = v.get(&format!("transit/keys/{ty}"), &v.root).await.json();
        let d = &r["data"];
        assert_eq!(d["type"], ty);
        assert_eq!(d["name"], ty);
        assert_eq!(d["latest_version"], 1);
        assert_eq!(d["min_decryption_version"], 1);
        assert_eq!(d["min_encryption_version"], 0);
        assert_eq!(d["deletion_allowed"], false);
        assert_eq!(d["supports_encryption"], true);
        assert_eq!(d["supports_decryption"], true);
        assert_eq!(d["supports_derivation"], true);
        assert_eq!(d["supports_signing"], false);
        assert!(d["keys"]["1"].is_number(), "{d}");
    }
    // Signing keys.
    for ty in ["ed25519", "ecdsa-p256"] {
        create(&v, ty, json!({ "type": ty })).await;
        let a = v
            .post(
                &format!("transit/sign/{ty}"),
                &v.root,
                json!({ "input": b64(b"message") }),
            )
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        let sig = a.json()["data"]["signature"].as_str().unwrap().to_owned();
        assert!(sig.starts_with("vault:v1:"));
        assert_eq!(a.json()["data"]["key_version"], 1);
        let a = v
            .post(
                &format!("transit/verify/{ty}"),
                &v.root,
                json!({ "input": b64(b"message"), "signature": sig }),
            )
            .await;
        assert_eq!(a.json()["data"]["valid"], true, "{:?}", a.body);
        let r = v.get(&format!("transit/keys/{ty}"), &v.root).await.json();
        assert_eq!(r["data"]["supports_signing"], true);
        assert_eq!(r["data"]["supports_encryption"], false);
        let pk = r["data"]["keys"]["1"]["public_key"].as_str().unwrap();
        if ty == "ecdsa-p256" {
            assert!(pk.starts_with("-----BEGIN PUBLIC KEY-----"), "{pk}");
            assert_eq!(r["data"]["keys"]["1"]["name"], "P-256");
        } else {
            assert_eq!(
                base64::engine::general_purpose::STANDARD
                    .decode(pk)
                    .unwrap()
                    .len(),
                32
            );
        }
        // A signing key does not encrypt.
        let a = v
            .post(
                &format!("transit/encrypt/{ty}"),
                &v.root,
                json!({ "plaintext": b64(b"x") }),
            )
            .await;
        assert_eq!(a.status, 400);
        assert!(errors(&a)[0].contains("does not support encryption"));
    }
    // HMAC keys: hmac and verify, nothing else.
    create(&v, "mac", json!({ "type": "hmac", "key_size": 64 })).await;
    let a = v
        .post(
            "transit/hmac/mac",
            &v.root,
            json!({ "input": b64(b"data") }),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let mac = a.json()["data"]["hmac"].as_str().unwrap().to_owned();
    let a = v
        .post(
            "transit/verify/mac",
            &v.root,
            json!({ "input": b64(b"data"), "hmac": mac }),
        )
        .await;
    assert_eq!(a.json()["data"]["valid"], true);
    let a = v
        .post(
            "transit/sign/mac",
            &v.root,
            json!({ "input": b64(b"data") }),
        )
        .await;
    assert_eq!(a.status, 400);
    // LIST keys.
    let a = v.list("transit/keys", &v.root).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json()["data"]["keys"],
        json!([
            "aes256-gcm96",
            "chacha20-poly1305",
            "default",
            "ecdsa-p256",
            "ed25519",
            "mac"
        ])
    );
}
both_backends!(every_key_type_round_trips);

async fn rotation_and_version_policy(b: Backend) {
    let v = TestVault::start(b).await;
    enable_transit(&v).await;
    create(&v, "k", json!({})).await;
    let old = encrypt(&v, "k", json!({ "plaintext": b64(b"v1 secret") })).await;
    let a = v.post("transit/keys/k/rotate", &v.root, json!({})).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.json()["data"]["latest_version"], 2);
    let new = encrypt(&v, "k", json!({ "plaintext": b64(b"v2 secret") })).await;
    assert!(new.starts_with("vault:v2:"), "{new}");
    // The old ciphertext still decrypts.
    let (s, d) = decrypt(&v, "k", json!({ "ciphertext": old })).await;
    assert_eq!(s, 200);
    assert_eq!(unb64(&d["data"]["plaintext"]), b"v1 secret");
    // Encrypting with an explicit old version works until min_encryption_version forbids it.
    let a = v
        .post(
            "transit/encrypt/k",
            &v.root,
            json!({ "plaintext": b64(b"x"), "key_version": 1 }),
        )
        .await;
    assert!(a.json()["data"]["ciphertext"]
        .as_str()
        .unwrap()
        .starts_with("vault:v1:"));
    // Rewrap moves the old ciphertext to the latest version.
    let a = v
        .post("transit/rewrap/k", &v.root, json!({ "ciphertext": old }))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let rewrapped = a.json()["data"]["ciphertext"].as_str().unwrap().to_owned();
    assert!(rewrapped.starts_with("vault:v2:"), "{rewrapped}");
    assert_eq!(a.json()["data"]["key_version"], 2);
    // min_decryption_version 2: the v1 ciphertext is refused, the rewrapped one opens.
    let a = v
        .post(
            "transit/keys/k/config",
            &v.root,
            json!({ "min_decryption_version": 2, "min_encryption_version": 2 }),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.json()["data"]["min_decryption_version"], 2);
    let (s, d) = decrypt(&v, "k", json!({ "ciphertext": old })).await;
    assert_eq!(s, 400);
    assert_eq!(
        d["errors"][0],
        "ciphertext or signature version is disallowed by policy (too old)"
    );
    let (s, d) = decrypt(&v, "k", json!({ "ciphertext": rewrapped })).await;
    assert_eq!(s, 200);
    assert_eq!(unb64(&d["data"]["plaintext"]), b"v1 secret");
    let a = v
        .post(
            "transit/encrypt/k",
            &v.root,
            json!({ "plaintext": b64(b"x"), "key_version": 1 }),
        )
        .await;
    assert_eq!(a.status, 400);
    // Only versions still decryptable are listed.
    let r = v.get("transit/keys/k", &v.root).await.json();
    assert!(r["data"]["keys"].get("1").is_none());
    assert!(r["data"]["keys"].get("2").is_some());
    // Config beyond the latest version is refused and changes nothing.
    let a = v
        .post(
            "transit/keys/k/config",
            &v.root,
            json!({ "min_decryption_version": 3 }),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        errors(&a),
        vec!["cannot set min decryption version of 3, latest key version is 2"]
    );
    let a = v
        .post(
            "transit/keys/k/config",
            &v.root,
            json!({ "min_encryption_version": 1 }),
        )
        .await;
    assert_eq!(a.status, 400);
    let r = v.get("transit/keys/k", &v.root).await.json();
    assert_eq!(r["data"]["min_decryption_version"], 2);
    assert_eq!(r["data"]["min_encryption_version"], 2);
    // A version from the future, and malformed ciphertexts.
    for (ct, msg) in [
        (
            "vault:v9:AAAA",
            "invalid ciphertext: version is too new or unknown",
        ),
        ("nope", "invalid ciphertext: no prefix"),
        (
            "vault:vX:AAAA",
            "invalid ciphertext: version number could not be decoded",
        ),
        (
            "vault:v2:!!!",
            "invalid ciphertext: could not decode base64",
        ),
        ("vault:v2:AAAA", "invalid ciphertext: too short"),
    ] {
        let (s, d) = decrypt(&v, "k", json!({ "ciphertext": ct })).await;
        assert_eq!((s, d["errors"][0].as_str().unwrap()), (400, msg), "{ct}");
    }
    // A ciphertext tampered with fails authentication.
    let (s, d) = decrypt(
        &v,
        "k",
        json!({ "ciphertext": tamper(&rewrapped, 20, None) }),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(d["errors"][0], "cipher: message authentication failed");
}
both_backends!(rotation_and_version_policy);

async fn derived_keys_need_the_context(b: Backend) {
    let v = TestVault::start(b).await;
    enable_transit(&v).await;
    let k = create(&v, "d", json!({ "derived": true })).await;
    assert_eq!(k["data"]["derived"], true);
    assert_eq!(k["data"]["kdf"], "hkdf_sha256");
    let a = v
        .post(
            "transit/encrypt/d",
            &v.root,
            json!({ "plaintext": b64(b"x") }),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(errors(&a)[0].starts_with("missing 'context' for key derivation"));
    let ct = encrypt(
        &v,
        "d",
        json!({ "plaintext": b64(b"tenant data"), "context": b64(b"tenant-1") }),
    )
    .await;
    let (s, d) = decrypt(
        &v,
        "d",
        json!({ "ciphertext": ct, "context": b64(b"tenant-1") }),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(unb64(&d["data"]["plaintext"]), b"tenant data");
    // Another context is another key.
    let (s, d) = decrypt(
        &v,
        "d",
        json!({ "ciphertext": ct, "context": b64(b"tenant-2") }),
    )
    .await;
    assert_eq!(
        (s, d["errors"][0].as_str().unwrap()),
        (400, "cipher: message authentication failed")
    );
    let (s, _) = decrypt(&v, "d", json!({ "ciphertext": ct })).await;
    assert_eq!(s, 400);
    // Upsert with a context creates a derived key; ecdsa keys cannot be derived.
    let ct = encrypt(
        &v,
        "auto",
        json!({ "plaintext": b64(b"y"), "context": b64(b"c") }),
    )
    .await;
    assert!(ct.starts_with("vault:v1:"));
    let r = v.get("transit/keys/auto", &v.root).await.json();
    assert_eq!(r["data"]["derived"], true);
    let a = v
        .post(
            "transit/keys/ec",
            &v.root,
            json!({ "type": "ecdsa-p256", "derived": true }),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(v.get("transit/keys/ec", &v.root).await.status, 404);
    // A derived ed25519 key signs and verifies per context.
    create(&v, "edd", json!({ "type": "ed25519", "derived": true })).await;
    let a = v
        .post(
            "transit/sign/edd",
            &v.root,
            json!({ "input": b64(b"m"), "context": b64(b"c1") }),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let sig = a.json()["data"]["signature"].clone();
    for (ctx, valid) in [("c1", true), ("c2", false)] {
        let a = v
            .post(
                "transit/verify/edd",
                &v.root,
                json!({ "input": b64(b"m"), "context": b64(ctx.as_bytes()), "signature": sig }),
            )
            .await;
        assert_eq!(a.json()["data"]["valid"], valid, "{ctx}");
    }
}
both_backends!(derived_keys_need_the_context);

async fn datakeys_hmac_random_and_hash(b: Backend) {
    let v = TestVault::start(b).await;
    enable_transit(&v).await;
    create(&v, "k", json!({})).await;
    for bits in [128u64, 256, 512] {
        let a = v
            .post(
                "transit/datakey/plaintext/k",
                &v.root,
                json!({ "bits": bits }),
            )
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        let d = a.json()["data"].clone();
        assert_eq!(unb64(&d["plaintext"]).len() as u64, bits / 8);
        // The ciphertext decrypts to the same key.
        let (s, p) = decrypt(&v, "k", json!({ "ciphertext": d["ciphertext"] })).await;
        assert_eq!(s, 200);
        assert_eq!(p["data"]["plaintext"], d["plaintext"]);
    }
    let a = v
        .post("transit/datakey/wrapped/k", &v.root, json!({}))
        .await;
    assert_eq!(a.status, 200);
    assert!(a.json()["data"].get("plaintext").is_none());
    assert!(a.json()["data"]["ciphertext"]
        .as_str()
        .unwrap()
        .starts_with("vault:v1:"));
    let a = v
        .post(
            "transit/datakey/plaintext/k",
            &v.root,
            json!({ "bits": 100 }),
        )
        .await;
    assert_eq!(a.status, 400);
    let a = v.post("transit/datakey/other/k", &v.root, json!({})).await;
    assert_eq!(a.status, 400);

    // HMAC with each algorithm ring has; sha2-224 is refused clearly.
    for (alg, len) in [("sha2-256", 32), ("sha2-384", 48), ("sha2-512", 64)] {
        let a = v
            .post(
                &format!("transit/hmac/k/{alg}"),
                &v.root,
                json!({ "input": b64(b"payload") }),
            )
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        let mac = a.json()["data"]["hmac"].as_str().unwrap().to_owned();
        let raw = mac.strip_prefix("vault:v1:").unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .unwrap()
                .len(),
            len
        );
        for (input, valid) in [(&b"payload"[..], true), (&b"payloaD"[..], false)] {
            let a = v
                .post(
                    &format!("transit/verify/k/{alg}"),
                    &v.root,
                    json!({ "input": b64(input), "hmac": mac }),
                )
                .await;
            assert_eq!(a.json()["data"]["valid"], valid, "{alg}");
        }
    }
    let a = v
        .post(
            "transit/hmac/k/sha2-224",
            &v.root,
            json!({ "input": b64(b"p") }),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(errors(&a)[0].contains("sha2-224"), "{:?}", errors(&a));
    // An HMAC survives a rotation and verifies with its own version.
    let a = v
        .post("transit/hmac/k", &v.root, json!({ "input": b64(b"p") }))
        .await;
    let mac = a.json()["data"]["hmac"].clone();
    v.post("transit/keys/k/rotate", &v.root, json!({})).await;
    let a = v
        .post(
            "transit/verify/k",
            &v.root,
            json!({ "input": b64(b"p"), "hmac": mac }),
        )
        .await;
    assert_eq!(a.json()["data"]["valid"], true);

    // random and hash (no key).
    let a = v.post("transit/random/48", &v.root, json!({})).await;
    assert_eq!(unb64(&a.json()["data"]["random_bytes"]).len(), 48);
    let a = v
        .post(
            "transit/random",
            &v.root,
            json!({ "bytes": 16, "format": "hex" }),
        )
        .await;
    assert_eq!(a.json()["data"]["random_bytes"].as_str().unwrap().len(), 32);
    let a = v.post("transit/random/0", &v.root, json!({})).await;
    assert_eq!(a.status, 400);
    let a = v.post("transit/random/1000000", &v.root, json!({})).await;
    assert_eq!(a.status, 400);
    let a = v
        .post("transit/hash", &v.root, json!({ "input": b64(b"abc") }))
        .await;
    assert_eq!(
        a.json()["data"]["sum"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let a = v
        .post(
            "transit/hash/sha2-512",
            &v.root,
            json!({ "input": b64(b"abc"), "format": "base64" }),
        )
        .await;
    assert_eq!(unb64(&a.json()["data"]["sum"]).len(), 64);
    let a = v
        .post("transit/hash", &v.root, json!({ "input": "not base64!" }))
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(errors(&a), vec!["failed to base64-decode input"]);
}
both_backends!(datakeys_hmac_random_and_hash);

async fn signatures_and_tampering(b: Backend) {
    let v = TestVault::start(b).await;
    enable_transit(&v).await;
    for ty in ["ed25519", "ecdsa-p256"] {
        create(&v, ty, json!({ "type": ty })).await;
        for marshaling in ["asn1", "jws"] {
            let a = v
                .post(
                    &format!("transit/sign/{ty}"),
                    &v.root,
                    json!({ "input": b64(b"order 42"), "marshaling_algorithm": marshaling }),
                )
                .await;
            assert_eq!(a.status, 200, "{:?}", a.body);
            let sig = a.json()["data"]["signature"].as_str().unwrap().to_owned();
            let verify = |input: &'static [u8], sig: String| {
                let v = &v;
                async move {
                    v.post(
                        &format!("transit/verify/{ty}"),
                        &v.root,
                        json!({
                            "input": b64(input),
                            "signature": sig,
                            "marshaling_algorithm": marshaling,
                        }),
                    )
                    .await
                }
            };
            let a = verify(b"order 42", sig.clone()).await;
            assert_eq!(a.json()["data"]["valid"], true, "{ty} {marshaling}");
            // Another message, or a changed signature, does not verify.
            let a = verify(b"order 43", sig.clone()).await;
            assert_eq!(a.json()["data"]["valid"], false);
            let engine = if marshaling == "jws" {
                Some(base64::engine::general_purpose::URL_SAFE_NO_PAD)
            } else {
                None
            };
            let a = verify(b"order 42", tamper(&sig, 10, engine)).await;
            assert_eq!(a.status, 200);
            assert_eq!(a.json()["data"]["valid"], false);
        }
        // After a rotation, old signatures verify until min_decryption_version moves.
        let a = v
            .post(
                &format!("transit/sign/{ty}"),
                &v.root,
                json!({ "input": b64(b"m") }),
            )
            .await;
        let old = a.json()["data"]["signature"].clone();
        v.post(&format!("transit/keys/{ty}/rotate"), &v.root, json!({}))
            .await;
        let a = v
            .post(
                &format!("transit/sign/{ty}"),
                &v.root,
                json!({ "input": b64(b"m") }),
            )
            .await;
        assert_eq!(a.json()["data"]["key_version"], 2);
        let check = json!({ "input": b64(b"m"), "signature": old });
        let a = v
            .post(&format!("transit/verify/{ty}"), &v.root, check.clone())
            .await;
        assert_eq!(a.json()["data"]["valid"], true);
        v.post(
            &format!("transit/keys/{ty}/config"),
            &v.root,
            json!({ "min_decryption_version": 2 }),
        )
        .await;
        let a = v
            .post(&format!("transit/verify/{ty}"), &v.root, check)
            .await;
        assert_eq!(a.status, 400);
    }
    // prehashed input and non-SHA-256 ECDSA are refused clearly.
    let a = v
        .post(
            "transit/sign/ecdsa-p256",
            &v.root,
            json!({ "input": b64(&[0u8; 32]), "prehashed": true }),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(errors(&a)[0].contains("prehashed"));
    let a = v
        .post(
            "transit/sign/ecdsa-p256/sha2-384",
            &v.root,
            json!({ "input": b64(b"m") }),
        )
        .await;
    assert_eq!(a.status, 400);
    // Neither or both of signature and hmac.
    let a = v
        .post(
            "transit/verify/ed25519",
            &v.root,
            json!({ "input": b64(b"m") }),
        )
        .await;
    assert_eq!(a.status, 400);
}
both_backends!(signatures_and_tampering);

async fn batches_report_each_item(b: Backend) {
    let v = TestVault::start(b).await;
    enable_transit(&v).await;
    create(&v, "k", json!({})).await;
    let a = v
        .post(
            "transit/encrypt/k",
            &v.root,
            json!({ "batch_input": [
                { "plaintext": b64(b"one"), "reference": "a" },
                { "plaintext": "%%% not base64", "reference": "b" },
                { "plaintext": b64(b"three") },
            ]}),
        )
        .await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    let results = a.json()["data"]["batch_results"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["reference"], "a");
    assert!(results[0]["ciphertext"]
        .as_str()
        .unwrap()
        .starts_with("vault:v1:"));
    assert_eq!(results[1]["error"], "failed to base64-decode plaintext");
    assert_eq!(results[1]["reference"], "b");
    assert!(results[1].get("ciphertext").is_none());
    assert!(results[2]["ciphertext"].is_string());
    // partial_failure_response_code changes the status when some items succeeded.
    let a = v
        .post(
            "transit/decrypt/k",
            &v.root,
            json!({
                "partial_failure_response_code": 207,
                "batch_input": [
                    { "ciphertext": results[0]["ciphertext"] },
                    { "ciphertext": "vault:v1:garbage" },
                    { "ciphertext": results[2]["ciphertext"] },
                ]
            }),
        )
        .await;
    assert_eq!(a.status, 207, "{:?}", a.body);
    let r = a.json()["data"]["batch_results"].clone();
    assert_eq!(unb64(&r[0]["plaintext"]), b"one");
    assert!(r[1]["error"]
        .as_str()
        .unwrap()
        .starts_with("invalid ciphertext"));
    assert_eq!(unb64(&r[2]["plaintext"]), b"three");
    // All good: 200.
    let a = v
        .post(
            "transit/hmac/k",
            &v.root,
            json!({ "batch_input": [{ "input": b64(b"1") }, { "input": b64(b"2") }] }),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json()["data"]["batch_results"].as_array().unwrap().len(),
        2
    );
    // Bounds: empty, too many, not objects.
    let too_many: Vec<Value> = (0..1001).map(|_| json!({ "plaintext": "" })).collect();
    for (body, msg) in [
        (
            json!({ "batch_input": [] }),
            "missing batch input to process",
        ),
        (
            json!({ "batch_input": too_many }),
            "batch_input has 1001 items; at most 1000 are allowed",
        ),
        (
            json!({ "batch_input": ["x"] }),
            "invalid value for \"batch_input\": expected a list of objects",
        ),
    ] {
        let a = v.post("transit/encrypt/k", &v.root, body).await;
        assert_eq!((a.status, errors(&a)), (400, vec![msg.to_owned()]));
    }
}
both_backends!(batches_report_each_item);

async fn deletion_needs_deletion_allowed(b: Backend) {
    let v = TestVault::start(b).await;
    enable_transit(&v).await;
    create(&v, "k", json!({})).await;
    let ct = encrypt(&v, "k", json!({ "plaintext": b64(b"x") })).await;
    let a = v.delete("transit/keys/k", &v.root).await;
    assert_eq!(a.status, 400);
    assert_eq!(errors(&a), vec!["deletion is not allowed for this key"]);
    let (s, _) = decrypt(&v, "k", json!({ "ciphertext": ct })).await;
    assert_eq!(s, 200, "a refused delete changes nothing");
    let a = v
        .post(
            "transit/keys/k/config",
            &v.root,
            json!({ "deletion_allowed": true }),
        )
        .await;
    assert_eq!(a.json()["data"]["deletion_allowed"], true);
    let a = v.delete("transit/keys/k", &v.root).await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    assert_eq!(v.get("transit/keys/k", &v.root).await.status, 404);
    let (s, d) = decrypt(&v, "k", json!({ "ciphertext": ct })).await;
    assert_eq!(
        (s, d["errors"][0].as_str().unwrap()),
        (400, "encryption key not found")
    );
    assert_eq!(v.list("transit/keys", &v.root).await.status, 404);
    // Creating it again makes a new key: the old ciphertext does not open.
    create(&v, "k", json!({})).await;
    let (s, _) = decrypt(&v, "k", json!({ "ciphertext": ct })).await;
    assert_eq!(s, 400);
}
both_backends!(deletion_needs_deletion_allowed);

async fn create_refusals_change_nothing(b: Backend) {
    let v = TestVault::start(b).await;
    enable_transit(&v).await;
    for (body, needle) in [
        (json!({ "type": "rsa-2048" }), "unknown key type"),
        (json!({ "exportable": true }), "exportable"),
        (
            json!({ "allow_plaintext_backup": true }),
            "allow_plaintext_backup",
        ),
        (json!({ "convergent_encryption": true }), "convergent"),
        (json!({ "type": "hmac", "key_size": 8 }), "key_size"),
        (json!({ "auto_rotate_period": "10m" }), "at least an hour"),
        (json!({ "derived": "maybe" }), "derived"),
    ] {
        let a = v.post("transit/keys/k", &v.root, body.clone()).await;
        assert_eq!(a.status, 400, "{body}");
        assert!(errors(&a)[0].contains(needle), "{body}: {:?}", errors(&a));
    }
    assert_eq!(v.get("transit/keys/k", &v.root).await.status, 404);
    let a = v.post("transit/keys/a%2Fb", &v.root, json!({})).await;
    assert_eq!(a.status, 404, "{:?}", a.body);
    let a = v.post("transit/keys/a%20b", &v.root, json!({})).await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert!(errors(&a)[0].starts_with("invalid key name"));
    // Creating an existing key keeps it, with Vault's warning.
    create(&v, "k", json!({ "type": "chacha20-poly1305" })).await;
    let a = create(&v, "k", json!({ "type": "ed25519" })).await;
    assert_eq!(a["data"]["type"], "chacha20-poly1305");
    assert_eq!(a["warnings"][0], "key k already existed");
    // Wrong method, unknown path.
    assert_eq!(v.get("transit/encrypt/k", &v.root).await.status, 405);
    assert_eq!(v.get("transit/nothing/here", &v.root).await.status, 404);
}
both_backends!(create_refusals_change_nothing);

async fn acl_applies_and_leaks_nothing(b: Backend) {
    let v = TestVault::start(b).await;
    enable_transit(&v).await;
    create(&v, "app-a", json!({})).await;
    create(&v, "app-b", json!({})).await;
    let ct_b = encrypt(&v, "app-b", json!({ "plaintext": b64(b"b's") })).await;
    v.policy(
        "app-a",
        r#"
        path "transit/encrypt/app-a" { capabilities = ["update"] }
        path "transit/decrypt/app-a" { capabilities = ["update"] }
        "#,
    )
    .await;
    let t = v.token(&v.root, json!({ "policies": ["app-a"] })).await;
    let a = v
        .post(
            "transit/encrypt/app-a",
            &t,
            json!({ "plaintext": b64(b"mine") }),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let ct_a = a.json()["data"]["ciphertext"].clone();
    let a = v
        .post("transit/decrypt/app-a", &t, json!({ "ciphertext": ct_a }))
        .await;
    assert_eq!(unb64(&a.json()["data"]["plaintext"]), b"mine");
    // Another key, existing or not, and every other endpoint: the same 403.
    for (method, path, body) in [
        (
            "POST",
            "transit/decrypt/app-b",
            json!({ "ciphertext": ct_b }),
        ),
        (
            "POST",
            "transit/decrypt/missing",
            json!({ "ciphertext": ct_b }),
        ),
        (
            "POST",
            "transit/encrypt/app-b",
            json!({ "plaintext": b64(b"x") }),
        ),
        ("POST", "transit/keys/app-b/rotate", json!({})),
        (
            "POST",
            "transit/keys/app-a/config",
            json!({ "deletion_allowed": true }),
        ),
        ("GET", "transit/keys/app-a", json!({})),
        ("GET", "transit/keys/missing", json!({})),
        ("LIST", "transit/keys", json!({})),
        ("DELETE", "transit/keys/app-a", json!({})),
        ("POST", "transit/datakey/plaintext/app-a", json!({})),
        ("POST", "transit/random", json!({})),
    ] {
        let a = v.call(method, path, Some(&t), Some(body)).await;
        assert_eq!(
            (a.status, errors(&a)),
            (403, vec!["permission denied".to_owned()]),
            "{method} {path}"
        );
    }
    // `update` without `create` may not create a key by encrypting (Vault's upsert).
    let a = v
        .post(
            "transit/encrypt/app-a-new",
            &t,
            json!({ "plaintext": b64(b"x") }),
        )
        .await;
    assert_eq!(a.status, 403);
    v.policy(
        "upd",
        r#"path "transit/encrypt/*" { capabilities = ["update"] }"#,
    )
    .await;
    let u = v.token(&v.root, json!({ "policies": ["upd"] })).await;
    let a = v
        .post(
            "transit/encrypt/fresh",
            &u,
            json!({ "plaintext": b64(b"x") }),
        )
        .await;
    assert_eq!(a.status, 403);
    assert_eq!(v.get("transit/keys/fresh", &v.root).await.status, 404);
    let a = v
        .post(
            "transit/encrypt/app-b",
            &u,
            json!({ "plaintext": b64(b"x") }),
        )
        .await;
    assert_eq!(a.status, 200, "update suffices for an existing key");
    // Nothing changed for app-b.
    let r = v.get("transit/keys/app-b", &v.root).await.json();
    assert_eq!(r["data"]["latest_version"], 1);
}
both_backends!(acl_applies_and_leaks_nothing);

async fn keys_survive_a_reopen(b: Backend) {
    let v = TestVault::start(b).await;
    enable_transit(&v).await;
    create(&v, "k", json!({ "type": "chacha20-poly1305" })).await;
    v.post("transit/keys/k/rotate", &v.root, json!({})).await;
    let ct = encrypt(&v, "k", json!({ "plaintext": b64(b"durable") })).await;
    let sig = {
        create(&v, "s", json!({ "type": "ed25519" })).await;
        let a = v
            .post("transit/sign/s", &v.root, json!({ "input": b64(b"m") }))
            .await;
        a.json()["data"]["signature"].clone()
    };
    let TestVault { location, dir, .. } = v;
    let v = TestVault::start_at(location, dir).await;
    let (s, d) = decrypt(&v, "k", json!({ "ciphertext": ct })).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(unb64(&d["data"]["plaintext"]), b"durable");
    let a = v
        .post(
            "transit/verify/s",
            &v.root,
            json!({ "input": b64(b"m"), "signature": sig }),
        )
        .await;
    assert_eq!(a.json()["data"]["valid"], true);
    let r = v.get("transit/keys/k", &v.root).await.json();
    assert_eq!(r["data"]["latest_version"], 2);
    // The key is one record under the mount's data prefix.
    let mounts = v.get("sys/mounts", &v.root).await.json();
    let uuid = mounts["data"]["transit/"]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let raw = v
        .store
        .get(&format!("vault/logical/{uuid}/k/k"))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&raw).contains("chacha20-poly1305"));
}
both_backends!(keys_survive_a_reopen);

async fn auto_rotation_happens_on_use(b: Backend) {
    let v = TestVault::start(b).await;
    enable_transit(&v).await;
    create(&v, "k", json!({ "auto_rotate_period": "1h" })).await;
    let r = v.get("transit/keys/k", &v.root).await.json();
    assert_eq!(r["data"]["auto_rotate_period"], 3600);
    let ct = encrypt(&v, "k", json!({ "plaintext": b64(b"x") })).await;
    assert!(ct.starts_with("vault:v1:"));
    v.clock.advance(3601);
    let ct = encrypt(&v, "k", json!({ "plaintext": b64(b"x") })).await;
    assert!(ct.starts_with("vault:v2:"), "{ct}");
    let ct = encrypt(&v, "k", json!({ "plaintext": b64(b"x") })).await;
    assert!(ct.starts_with("vault:v2:"), "one rotation per period: {ct}");
}
both_backends!(auto_rotation_happens_on_use);
