//! The store's behaviour, written once and run on every backend: SQLite always (in a temp
//! dir), PostgreSQL when `WARDEN_TEST_DATABASE_URL` is set (in a fresh schema per test,
//! dropped afterwards).

mod support;

use std::collections::HashSet;

use serde_json::json;
use support::Ctx;
use warden_store::{
    AuditEvent, AuditRetention, Op, Store, StoreError, MAX_KEY_BYTES, MAX_VALUE_BYTES,
};

/// Each test once, for both backends: `sqlite::name` and `postgres::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let ctx = super::Ctx::sqlite().await;
                    super::$name(&ctx).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(ctx) = super::Ctx::postgres().await else {
                        eprintln!("WARDEN_TEST_DATABASE_URL is not set: PostgreSQL test skipped");
                        return;
                    };
                    super::$name(&ctx).await;
                }
            )*
        }
    };
}

on_both_backends!(
    put_get_delete_round_trip,
    list_is_sorted_and_respects_prefix_boundaries,
    list_page_pages_through_a_prefix,
    put_if_absent_only_writes_once,
    transact_is_all_or_nothing,
    concurrent_put_if_absent_has_exactly_one_winner,
    values_are_encrypted_at_rest,
    value_moved_to_another_key_does_not_open,
    wrong_kek_is_refused,
    data_key_rotation_keeps_old_values_readable,
    rotation_seen_by_another_open_store,
    writes_survive_drop_without_close,
    writes_survive_process_abort,
    audit_chain_verifies_and_pages,
    concurrent_audit_appends_form_one_chain,
    audit_edit_is_detected,
    audit_delete_is_detected,
    audit_log_is_append_only_in_the_database,
    audit_pruning_keeps_the_rest_verifiable,
    audit_pruning_by_age_can_empty_the_log,
    size_limits_are_enforced,
    migrations_are_idempotent_on_reopen,
    newer_schema_is_refused,
    sealed_store_refuses_data_until_unsealed,
    initialize_happens_once,
    key_status_follows_rotation,
    one_store_leads_at_a_time_until_its_session_ends,
    transact_audited_commits_the_change_and_its_event_together,
    concurrent_audited_writes_and_appends_interleave_in_one_chain,
    audited_writes_to_one_key_apply_in_audit_order,
    cached_reads_see_every_write_through_the_store,
);

/// `get_cached` answers from memory, but never an old value after a write through the
/// store (any method), a rotation's reseal, or a seal; another process's write is seen after
/// `clear_cache`.
async fn cached_reads_see_every_write_through_the_store(ctx: &Ctx) {
    let s = &ctx.store;
    assert_eq!(s.get_cached("c/a").await.unwrap(), None);
    s.put("c/a", b"1").await.unwrap();
    assert_eq!(
        s.get_cached("c/a").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    s.put("c/a", b"2").await.unwrap();
    assert_eq!(
        s.get_cached("c/a").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
    s.transact(vec![Op::Put {
        key: "c/a".into(),
        value: b"3".to_vec(),
    }])
    .await
    .unwrap();
    assert_eq!(
        s.get_cached("c/a").await.unwrap().as_deref(),
        Some(&b"3"[..])
    );
    s.transact_audited(
        vec![Op::Put {
            key: "c/a".into(),
            value: b"4".to_vec(),
        }],
        &event(1),
    )
    .await
    .unwrap();
    assert_eq!(
        s.get_cached("c/a").await.unwrap().as_deref(),
        Some(&b"4"[..])
    );
    assert!(!s.put_if_absent("c/a", b"5").await.unwrap());
    assert_eq!(
        s.get_cached("c/a").await.unwrap().as_deref(),
        Some(&b"4"[..])
    );
    // A rotation reseals every value under the new key: still readable, same value.
    s.rotate_data_key().await.unwrap();
    s.reseal("c/").await.unwrap();
    assert_eq!(
        s.get_cached("c/a").await.unwrap().as_deref(),
        Some(&b"4"[..])
    );
    assert!(s.delete("c/a").await.unwrap());
    assert_eq!(s.get_cached("c/a").await.unwrap(), None);

    // Another handle (another process, as far as this one knows) writes: seen once the
    // cache is cleared, and sealing clears it too.
    s.put("c/b", b"old").await.unwrap();
    assert_eq!(
        s.get_cached("c/b").await.unwrap().as_deref(),
        Some(&b"old"[..])
    );
    let other = ctx.reopen().await.unwrap();
    other.put("c/b", b"new").await.unwrap();
    s.clear_cache();
    assert_eq!(
        s.get_cached("c/b").await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    other.put("c/b", b"newer").await.unwrap();
    s.seal();
    assert!(
        s.get_cached("c/b").await.is_err(),
        "sealed: no reads, cached or not"
    );
}

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        component: "tokens".into(),
        action: "token.issue".into(),
        actor: format!("client-{n}"),
        subject: Some(format!("jti-{n}")),
        outcome: "success".into(),
        detail: json!({ "scope": "read write", "aud": ["api"], "n": n }),
        source: Some("127.0.0.1".into()),
    }
}

fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}

#[test]
fn store_is_send_sync_clone() {
    assert_send_sync_clone::<Store>();
}

#[tokio::test]
async fn unusable_locations_are_refused_clearly() {
    let err = Store::open("mysql://localhost/db", &support::KEK)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidLocation(_)), "{err:?}");
    let err = Store::open("", &support::KEK).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidLocation(_)), "{err:?}");
    let err = Store::open(
        "postgres://u:hunter2@127.0.0.1:1/db?sslmode=require",
        &support::KEK,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::InvalidLocation(_)), "{err:?}");
    assert!(
        !err.to_string().contains("hunter2"),
        "no password in errors: {err}"
    );
    let err = Store::open("postgres://u:hunter2@127.0.0.1:1/db", &support::KEK)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(
        !err.to_string().contains("hunter2"),
        "no password in errors: {err}"
    );
}

async fn put_get_delete_round_trip(ctx: &Ctx) {
    let s = &ctx.store;
    assert_eq!(s.backend_name(), ctx.backend_name());
    assert_eq!(s.get("tokens/clients/a").await.unwrap(), None);
    s.put("tokens/clients/a", b"one").await.unwrap();
    assert_eq!(
        s.get("tokens/clients/a").await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    s.put("tokens/clients/a", b"two").await.unwrap();
    assert_eq!(
        s.get("tokens/clients/a").await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    // Empty values and binary values round-trip.
    s.put("empty", b"").await.unwrap();
    assert_eq!(s.get("empty").await.unwrap(), Some(vec![]));
    let binary: Vec<u8> = (0..=255).collect();
    s.put("bin/\u{e9}\u{1F600}", &binary).await.unwrap();
    assert_eq!(s.get("bin/\u{e9}\u{1F600}").await.unwrap(), Some(binary));

    assert!(s.delete("tokens/clients/a").await.unwrap());
    assert!(!s.delete("tokens/clients/a").await.unwrap());
    assert_eq!(s.get("tokens/clients/a").await.unwrap(), None);
}

async fn list_is_sorted_and_respects_prefix_boundaries(ctx: &Ctx) {
    let s = &ctx.store;
    for k in [
        "a/bc",
        "a/b/2",
        "a/b",
        "a/b/1",
        "a/c",
        "a",
        "b/x",
        "a/b/\u{e9}",
        "a/b/Z",
        "a/b0",
        "a/b\u{10FFFF}x",
    ] {
        s.put(k, k.as_bytes()).await.unwrap();
    }
    // Byte order, whatever the database's locale.
    assert_eq!(
        s.list("a/b/").await.unwrap(),
        ["a/b/1", "a/b/2", "a/b/Z", "a/b/\u{e9}"]
            .map(String::from)
            .to_vec()
    );
    // A plain string prefix: `a/b` includes `a/bc`, `a/b0` and `a/b\u{10FFFF}x`, not `a/c`.
    assert_eq!(
        s.list("a/b").await.unwrap(),
        [
            "a/b",
            "a/b/1",
            "a/b/2",
            "a/b/Z",
            "a/b/\u{e9}",
            "a/b0",
            "a/bc",
            "a/b\u{10FFFF}x"
        ]
        .map(String::from)
        .to_vec()
    );
    assert_eq!(s.list("a/bc").await.unwrap(), vec!["a/bc".to_string()]);
    assert!(s.list("a/bd").await.unwrap().is_empty());
    assert!(s.list("zzz").await.unwrap().is_empty());
    let all = s.list("").await.unwrap();
    assert_eq!(all.len(), 11);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    // LIKE metacharacters are not special.
    s.put("p%/_x", b"1").await.unwrap();
    assert_eq!(s.list("p%").await.unwrap(), vec!["p%/_x".to_string()]);
    assert!(s.list("p_").await.unwrap().is_empty());
}

async fn list_page_pages_through_a_prefix(ctx: &Ctx) {
    let s = &ctx.store;
    for i in 0..25 {
        s.put(&format!("vault/kv/{i:03}"), b"v").await.unwrap();
    }
    s.put("vault/kw", b"outside").await.unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s
            .list_page("vault/kv/", after.as_deref(), 10)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        after = page.last().cloned();
        seen.extend(page);
    }
    assert_eq!(
        seen,
        (0..25)
            .map(|i| format!("vault/kv/{i:03}"))
            .collect::<Vec<_>>()
    );
    // A start_after before the prefix starts at the prefix.
    assert_eq!(
        s.list_page("vault/kv/", Some("a"), 1).await.unwrap(),
        vec!["vault/kv/000".to_string()]
    );
}

async fn put_if_absent_only_writes_once(ctx: &Ctx) {
    let s = &ctx.store;
    assert!(s.put_if_absent("ca/serial/1", b"first").await.unwrap());
    assert!(!s.put_if_absent("ca/serial/1", b"second").await.unwrap());
    assert_eq!(
        s.get("ca/serial/1").await.unwrap().as_deref(),
        Some(&b"first"[..])
    );
    assert!(s.delete("ca/serial/1").await.unwrap());
    assert!(s.put_if_absent("ca/serial/1", b"third").await.unwrap());
    assert_eq!(
        s.get("ca/serial/1").await.unwrap().as_deref(),
        Some(&b"third"[..])
    );
}

async fn transact_is_all_or_nothing(ctx: &Ctx) {
    let s = &ctx.store;
    s.put("t/existing", b"old").await.unwrap();
    s.put("t/doomed", b"still here").await.unwrap();

    let err = s
        .transact(vec![
            Op::Put {
                key: "t/new".into(),
                value: b"n".to_vec(),
            },
            Op::Put {
                key: "t/existing".into(),
                value: b"overwritten".to_vec(),
            },
            Op::Delete {
                key: "t/doomed".into(),
            },
            Op::PutIfAbsent {
                key: "t/existing".into(),
                value: b"x".to_vec(),
            },
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    assert_eq!(s.get("t/new").await.unwrap(), None);
    assert_eq!(
        s.get("t/existing").await.unwrap().as_deref(),
        Some(&b"old"[..])
    );
    assert_eq!(
        s.get("t/doomed").await.unwrap().as_deref(),
        Some(&b"still here"[..])
    );

    // A conflict inside one transaction does not disturb a concurrent, valid one.
    let (a, b) = tokio::join!(
        s.transact(vec![Op::PutIfAbsent {
            key: "t/existing".into(),
            value: b"x".to_vec()
        }]),
        s.transact(vec![Op::Put {
            key: "t/other".into(),
            value: b"o".to_vec()
        }]),
    );
    assert!(matches!(a, Err(StoreError::Conflict)));
    b.unwrap();
    assert_eq!(s.get("t/other").await.unwrap().as_deref(), Some(&b"o"[..]));

    s.transact(vec![
        Op::PutIfAbsent {
            key: "t/a".into(),
            value: b"1".to_vec(),
        },
        Op::Put {
            key: "t/b".into(),
            value: b"2".to_vec(),
        },
        Op::Delete {
            key: "t/doomed".into(),
        },
        Op::Put {
            key: "t/b".into(),
            value: b"3".to_vec(),
        },
    ])
    .await
    .unwrap();
    assert_eq!(s.get("t/a").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(
        s.get("t/b").await.unwrap().as_deref(),
        Some(&b"3"[..]),
        "ops apply in order"
    );
    assert_eq!(s.get("t/doomed").await.unwrap(), None);
    s.transact(vec![]).await.unwrap();
}

async fn concurrent_put_if_absent_has_exactly_one_winner(ctx: &Ctx) {
    const KEYS: usize = 10;
    const RACERS: usize = 8;
    let mut tasks = Vec::new();
    for racer in 0..RACERS {
        // Separate handles and separate opens race as separate processes would.
        let store = if racer % 2 == 0 {
            ctx.store.clone()
        } else {
            ctx.reopen().await.unwrap()
        };
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for k in 0..KEYS {
                if store
                    .put_if_absent(&format!("race/{k}"), format!("{racer}").as_bytes())
                    .await
                    .unwrap()
                {
                    won.push(k);
                }
            }
            (racer, won)
        }));
    }
    let mut winners = [None; KEYS];
    for t in tasks {
        let (racer, won) = t.await.unwrap();
        for k in won {
            assert!(winners[k].is_none(), "key {k} won twice");
            winners[k] = Some(racer);
        }
    }
    for (k, w) in winners.iter().enumerate() {
        let w = w.unwrap_or_else(|| panic!("nobody won key {k}"));
        let stored = ctx.store.get(&format!("race/{k}")).await.unwrap().unwrap();
        assert_eq!(stored, format!("{w}").into_bytes());
    }
}

async fn values_are_encrypted_at_rest(ctx: &Ctx) {
    let plaintext = b"PLAINTEXT-MARKER-client-secret-hash";
    ctx.store
        .put("tokens/clients/enc", plaintext)
        .await
        .unwrap();
    ctx.store
        .put("tokens/clients/enc2", plaintext)
        .await
        .unwrap();
    let raw = ctx
        .raw_value("tokens/clients/enc")
        .await
        .expect("the row exists");
    let raw2 = ctx.raw_value("tokens/clients/enc2").await.unwrap();
    assert!(!contains(&raw, plaintext), "the plaintext is in the table");
    assert!(!contains(&raw, b"PLAINTEXT-MARKER"));
    assert_eq!(raw.len(), plaintext.len() + 1 + 4 + 12 + 16);
    assert_ne!(raw, raw2, "random nonces: the same value seals differently");
    // Nor anywhere in the database file(s).
    if let Some(bytes) = ctx.raw_files() {
        assert!(
            !contains(&bytes, b"PLAINTEXT-MARKER"),
            "the plaintext is in the database files"
        );
        assert!(
            contains(&bytes, b"tokens/clients/enc"),
            "keys are plain text (documented)"
        );
    }
}

async fn value_moved_to_another_key_does_not_open(ctx: &Ctx) {
    ctx.store.put("vault/a", b"for a only").await.unwrap();
    ctx.raw_exec(
        "INSERT INTO kv (key, value) SELECT 'vault/b', value FROM kv WHERE key = 'vault/a'",
    )
    .await;
    let err = ctx.store.get("vault/b").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("vault/b"), "{err}");
    // Flip one ciphertext bit in place.
    ctx.store.put("vault/c", b"tamper me").await.unwrap();
    ctx.raw_flip_last_byte("vault/c").await;
    assert!(matches!(
        ctx.store.get("vault/c").await,
        Err(StoreError::Corrupt(_))
    ));
    // The untouched value still opens.
    assert_eq!(
        ctx.store.get("vault/a").await.unwrap().as_deref(),
        Some(&b"for a only"[..])
    );
}

async fn wrong_kek_is_refused(ctx: &Ctx) {
    ctx.store.put("k", b"v").await.unwrap();
    let err = Store::open(&ctx.location, &[0x42; 32]).await.unwrap_err();
    assert!(matches!(err, StoreError::Crypto(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "crypto: the key-encryption key does not open this store's keyring"
    );
    let err = Store::open(&ctx.location, &[0x42; 31]).await.unwrap_err();
    assert!(matches!(err, StoreError::Crypto(_)), "{err:?}");
    // The right one still works.
    assert_eq!(
        ctx.reopen()
            .await
            .unwrap()
            .get("k")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"v"[..])
    );
}

async fn data_key_rotation_keeps_old_values_readable(ctx: &Ctx) {
    let s = &ctx.store;
    s.put("old", b"sealed with dek 1").await.unwrap();
    s.rotate_data_key().await.unwrap();
    s.put("new", b"sealed with dek 2").await.unwrap();
    assert_eq!(dek_of(&ctx.raw_value("old").await.unwrap()), 1);
    assert_eq!(dek_of(&ctx.raw_value("new").await.unwrap()), 2);
    assert_eq!(
        s.get("old").await.unwrap().as_deref(),
        Some(&b"sealed with dek 1"[..])
    );

    let reopened = ctx.reopen().await.unwrap();
    assert_eq!(
        reopened.get("old").await.unwrap().as_deref(),
        Some(&b"sealed with dek 1"[..])
    );
    assert_eq!(
        reopened.get("new").await.unwrap().as_deref(),
        Some(&b"sealed with dek 2"[..])
    );
    reopened.put("newer", b"x").await.unwrap();
    assert_eq!(
        dek_of(&ctx.raw_value("newer").await.unwrap()),
        2,
        "a reopened store writes with the newest DEK"
    );

    s.rotate_data_key().await.unwrap();
    assert_eq!(s.reseal("").await.unwrap(), 3);
    for k in ["old", "new", "newer"] {
        assert_eq!(dek_of(&ctx.raw_value(k).await.unwrap()), 3, "{k}");
    }
    assert_eq!(
        s.get("old").await.unwrap().as_deref(),
        Some(&b"sealed with dek 1"[..])
    );
    assert_eq!(s.reseal("").await.unwrap(), 0);
}

async fn rotation_seen_by_another_open_store(ctx: &Ctx) {
    let other = ctx.reopen().await.unwrap();
    ctx.store.rotate_data_key().await.unwrap();
    ctx.store.put("fresh", b"under dek 2").await.unwrap();
    // `other` loaded the keyring before the rotation; it reloads on an unknown DEK id.
    assert_eq!(
        other.get("fresh").await.unwrap().as_deref(),
        Some(&b"under dek 2"[..])
    );
}

async fn writes_survive_drop_without_close(ctx: &Ctx) {
    let s = ctx.reopen().await.unwrap();
    s.put("durable/1", b"kept").await.unwrap();
    s.audit(&event(1)).await.unwrap();
    drop(s);
    let s = ctx.reopen().await.unwrap();
    assert_eq!(
        s.get("durable/1").await.unwrap().as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(s.verify_audit().await.unwrap(), 1);
}

async fn writes_survive_process_abort(ctx: &Ctx) {
    let location = ctx.location.clone();
    let status = tokio::task::spawn_blocking(move || {
        support::run_child_writer(&location, support::CHILD_WRITES)
    })
    .await
    .unwrap();
    assert!(
        !status.success(),
        "the child must abort, not exit cleanly: {status:?}"
    );
    let s = ctx.reopen().await.unwrap();
    for i in 0..support::CHILD_WRITES {
        let v = s.get(&format!("child/{i}")).await.unwrap();
        assert_eq!(
            v,
            Some(format!("acknowledged {i}").into_bytes()),
            "write {i} was acknowledged then lost"
        );
    }
    assert_eq!(
        s.verify_audit().await.unwrap(),
        support::CHILD_WRITES as u64
    );
}

/// Run by `writes_survive_process_abort` in a child process; does nothing otherwise.
#[test]
fn child_writer() {
    support::child_writer_main();
}

async fn audit_chain_verifies_and_pages(ctx: &Ctx) {
    let s = &ctx.store;
    assert_eq!(s.verify_audit().await.unwrap(), 0);
    assert!(s.audit_since(0, 10).await.unwrap().is_empty());
    for n in 1..=25 {
        assert_eq!(s.audit(&event(n)).await.unwrap(), n);
    }
    assert_eq!(s.verify_audit().await.unwrap(), 25);

    let first = s.audit_since(0, 10).await.unwrap();
    assert_eq!(
        first.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(first[0].prev_hash, warden_store::GENESIS_HASH);
    assert_eq!(first[1].prev_hash, first[0].hash);
    assert_eq!(first[3].event, event(4), "the event round-trips exactly");
    assert!(first[0].time > 1_600_000_000_000, "unix millis");
    let rest = s.audit_since(20, 100).await.unwrap();
    assert_eq!(
        rest.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (21..=25).collect::<Vec<_>>()
    );
    assert!(s.audit_since(25, 100).await.unwrap().is_empty());

    // Arbitrary JSON detail (nested, unordered keys, numbers, unicode) keeps verifying.
    let mut odd = event(26);
    odd.detail =
        json!({ "z": {"b": 1.5, "a": [null, true, -3]}, "\u{e9}": "\"q\"\n", "big": u64::MAX });
    odd.subject = None;
    odd.source = None;
    s.audit(&odd).await.unwrap();
    assert_eq!(s.audit_since(25, 1).await.unwrap()[0].event, odd);
    assert_eq!(
        ctx.reopen().await.unwrap().verify_audit().await.unwrap(),
        26
    );
}

async fn concurrent_audit_appends_form_one_chain(ctx: &Ctx) {
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let s = if t % 2 == 0 {
            ctx.store.clone()
        } else {
            ctx.reopen().await.unwrap()
        };
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25 {
                // Synced and logged appends (reads' events) share the one chain.
                let e = event(t * 100 + i);
                let seq = if (t + i) % 3 == 0 {
                    s.audit_logged(&e).await
                } else {
                    s.audit(&e).await
                };
                seqs.push(seq.unwrap());
            }
            seqs
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        for seq in t.await.unwrap() {
            assert!(all.insert(seq), "seq {seq} handed out twice");
        }
    }
    assert_eq!(all, (1..=100).collect::<HashSet<u64>>());
    assert_eq!(ctx.store.verify_audit().await.unwrap(), 100);
}

async fn audit_edit_is_detected(ctx: &Ctx) {
    for n in 1..=5 {
        ctx.store.audit(&event(n)).await.unwrap();
    }
    ctx.raw_disable_audit_triggers().await;
    ctx.raw_exec("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
        .await;
    let err = ctx.store.verify_audit().await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(
        err.to_string().contains("audit record 3 was altered"),
        "{err}"
    );

    // Re-hashing the edited record is caught by the next record's prev_hash.
    let rec3 = ctx.store.audit_since(2, 1).await.unwrap().remove(0);
    let rehashed = support::rehash(&rec3);
    ctx.raw_exec(&format!(
        "UPDATE audit_log SET hash = '{rehashed}' WHERE seq = 3"
    ))
    .await;
    let err = ctx.store.verify_audit().await.unwrap_err();
    assert!(
        err.to_string().contains("audit record 4: prev_hash"),
        "{err}"
    );

    // An edited time is caught too, and the earliest damage is the one named.
    ctx.raw_exec("UPDATE audit_log SET time_ms = time_ms + 1 WHERE seq = 1")
        .await;
    let err = ctx.store.verify_audit().await.unwrap_err();
    assert!(
        err.to_string().contains("audit record 1 was altered"),
        "{err}"
    );
}

async fn audit_delete_is_detected(ctx: &Ctx) {
    for n in 1..=6 {
        ctx.store.audit(&event(n)).await.unwrap();
    }
    ctx.raw_disable_audit_triggers().await;
    // The newest record: the chain is intact but shorter than its head.
    ctx.raw_exec("DELETE FROM audit_log WHERE seq = 6").await;
    let err = ctx.store.verify_audit().await.unwrap_err();
    assert!(
        err.to_string().contains("audit record 6 is missing"),
        "{err}"
    );
    // One in the middle.
    ctx.raw_exec("DELETE FROM audit_log WHERE seq = 2").await;
    let err = ctx.store.verify_audit().await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(
        err.to_string().contains("audit record 2 is missing"),
        "{err}"
    );
}

async fn audit_log_is_append_only_in_the_database(ctx: &Ctx) {
    ctx.store.audit(&event(1)).await.unwrap();
    assert!(ctx
        .raw_try_exec("UPDATE audit_log SET actor = 'x' WHERE seq = 1")
        .await
        .is_err());
    assert!(ctx
        .raw_try_exec("DELETE FROM audit_log WHERE seq = 1")
        .await
        .is_err());
    assert_eq!(ctx.store.verify_audit().await.unwrap(), 1);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Issue 15, item 13: pruning by count leaves a checkpoint from which the rest verifies;
/// editing a remaining record, or the checkpoint, is still detected; the database refuses to
/// delete records the checkpoint does not cover; a damaged chain is not pruned.
async fn audit_pruning_keeps_the_rest_verifiable(ctx: &Ctx) {
    let s = &ctx.store;
    for n in 1..=20 {
        s.audit(&event(n)).await.unwrap();
    }
    assert_eq!(s.audit_checkpoint().await.unwrap(), None);
    let keep = AuditRetention {
        max_age_ms: None,
        max_records: Some(5),
    };
    let report = s.prune_audit(keep, now_ms()).await.unwrap();
    assert_eq!(report.pruned, 15);
    let cp = report.checkpoint.unwrap();
    assert_eq!(cp.seq, 15);
    assert_eq!(s.audit_checkpoint().await.unwrap(), Some(cp.clone()));
    let left: Vec<u64> = s
        .audit_since(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(left, (16..=20).collect::<Vec<_>>());
    assert_eq!(
        left.len() as i64,
        ctx.raw_count("SELECT COUNT(*) FROM audit_log").await
    );
    assert_eq!(s.verify_audit().await.unwrap(), 20);
    // Nothing more to prune; appends continue the chain.
    assert_eq!(s.prune_audit(keep, now_ms()).await.unwrap().pruned, 0);
    for n in 21..=22 {
        s.audit(&event(n)).await.unwrap();
    }
    assert_eq!(s.verify_audit().await.unwrap(), 22);
    // Records the checkpoint does not cover cannot be deleted, nor any updated.
    assert!(ctx
        .raw_try_exec("DELETE FROM audit_log WHERE seq = 17")
        .await
        .is_err());
    assert!(ctx
        .raw_try_exec("UPDATE audit_log SET actor = 'x' WHERE seq = 17")
        .await
        .is_err());

    // An attacker with the database (triggers off) edits a remaining record: caught.
    ctx.raw_disable_audit_triggers().await;
    ctx.raw_exec("UPDATE audit_log SET actor = 'mallory' WHERE seq = 17")
        .await;
    let err = s.verify_audit().await.unwrap_err();
    assert!(
        err.to_string().contains("audit record 17 was altered"),
        "{err}"
    );
    // And pruning refuses to launder it into a checkpoint.
    let deeper = AuditRetention {
        max_age_ms: None,
        max_records: Some(2),
    };
    assert!(s.prune_audit(deeper, now_ms()).await.is_err());
    assert_eq!(s.audit_checkpoint().await.unwrap().unwrap().seq, 15);
    ctx.raw_exec("UPDATE audit_log SET actor = 'client-17' WHERE seq = 17")
        .await;
    assert_eq!(s.verify_audit().await.unwrap(), 22);

    // Moving the checkpoint forward to hide a deleted record: its MAC no longer holds.
    ctx.raw_exec("DELETE FROM audit_log WHERE seq = 16").await;
    let rec16_hash = "0".repeat(64);
    ctx.raw_exec(&format!(
        "UPDATE audit_checkpoint SET seq = 16, hash = '{rec16_hash}'"
    ))
    .await;
    let err = s.verify_audit().await.unwrap_err();
    assert!(err.to_string().contains("does not authenticate"), "{err}");
    // Putting it back exposes the deleted record.
    ctx.raw_exec(&format!(
        "UPDATE audit_checkpoint SET seq = 15, hash = '{}'",
        cp.hash
    ))
    .await;
    let err = s.verify_audit().await.unwrap_err();
    assert!(
        err.to_string().contains("audit record 16 is missing"),
        "{err}"
    );
    // Removing the checkpoint altogether: the chain no longer starts at record 1.
    ctx.raw_exec("DELETE FROM audit_checkpoint").await;
    let err = s.verify_audit().await.unwrap_err();
    assert!(
        err.to_string().contains("audit record 1 is missing"),
        "{err}"
    );
}

/// Pruning by age removes every record older than the limit (here all of them); the head
/// still anchors the chain, and appending continues it.
async fn audit_pruning_by_age_can_empty_the_log(ctx: &Ctx) {
    let s = &ctx.store;
    for n in 1..=3 {
        s.audit(&event(n)).await.unwrap();
    }
    let keep = AuditRetention {
        max_age_ms: Some(60_000),
        max_records: None,
    };
    // Nothing is a minute old yet.
    assert_eq!(s.prune_audit(keep, now_ms()).await.unwrap().pruned, 0);
    let report = s.prune_audit(keep, now_ms() + 120_000).await.unwrap();
    assert_eq!(report.pruned, 3);
    assert_eq!(ctx.raw_count("SELECT COUNT(*) FROM audit_log").await, 0);
    assert_eq!(s.verify_audit().await.unwrap(), 3);
    s.audit(&event(4)).await.unwrap();
    assert_eq!(s.verify_audit().await.unwrap(), 4);
    // A reopened store (same KEK) accepts the checkpoint; the MAC key is not stored.
    assert_eq!(ctx.reopen().await.unwrap().verify_audit().await.unwrap(), 4);
}

async fn size_limits_are_enforced(ctx: &Ctx) {
    let s = &ctx.store;
    let longest = "k".repeat(MAX_KEY_BYTES);
    s.put(&longest, b"v").await.unwrap();
    assert_eq!(s.get(&longest).await.unwrap().as_deref(), Some(&b"v"[..]));
    let too_long = "k".repeat(MAX_KEY_BYTES + 1);
    assert!(matches!(
        s.put(&too_long, b"v").await,
        Err(StoreError::InvalidKey(_))
    ));
    assert!(matches!(
        s.get(&too_long).await,
        Err(StoreError::InvalidKey(_))
    ));
    assert!(matches!(
        s.put("", b"v").await,
        Err(StoreError::InvalidKey(_))
    ));
    assert!(matches!(
        s.put("a\0b", b"v").await,
        Err(StoreError::InvalidKey(_))
    ));
    assert!(matches!(
        s.list("a\0").await,
        Err(StoreError::InvalidKey(_))
    ));

    let biggest = vec![7u8; MAX_VALUE_BYTES];
    s.put("big", &biggest).await.unwrap();
    assert_eq!(s.get("big").await.unwrap().unwrap().len(), MAX_VALUE_BYTES);
    let err = s
        .put("bigger", &vec![7u8; MAX_VALUE_BYTES + 1])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge(_)), "{err:?}");
    assert!(
        err.to_string().contains("bigger"),
        "the error names the key: {err}"
    );
    assert!(matches!(
        s.put_if_absent("bigger", &vec![7u8; MAX_VALUE_BYTES + 1])
            .await,
        Err(StoreError::TooLarge(_))
    ));
    assert_eq!(s.get("bigger").await.unwrap(), None);

    let ops = (0..=warden_store::MAX_TRANSACTION_OPS)
        .map(|i| Op::Delete {
            key: format!("d/{i}"),
        })
        .collect();
    assert!(matches!(
        s.transact(ops).await,
        Err(StoreError::TooLarge(_))
    ));
    // An invalid key anywhere in a transaction refuses all of it.
    let err = s
        .transact(vec![
            Op::Put {
                key: "ok".into(),
                value: vec![],
            },
            Op::Delete { key: String::new() },
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidKey(_)));
    assert_eq!(s.get("ok").await.unwrap(), None);

    let mut huge = event(1);
    huge.detail = json!({ "x": "a".repeat(warden_store::MAX_EVENT_BYTES) });
    assert!(matches!(s.audit(&huge).await, Err(StoreError::TooLarge(_))));
    assert_eq!(s.verify_audit().await.unwrap(), 0);
}

async fn migrations_are_idempotent_on_reopen(ctx: &Ctx) {
    ctx.store.put("m/1", b"before").await.unwrap();
    ctx.store.audit(&event(1)).await.unwrap();
    for _ in 0..2 {
        let s = ctx.reopen().await.unwrap();
        assert_eq!(s.get("m/1").await.unwrap().as_deref(), Some(&b"before"[..]));
    }
    assert_eq!(
        ctx.raw_count("SELECT COUNT(*) FROM schema_version").await,
        4
    );
    assert_eq!(
        ctx.raw_count("SELECT COUNT(*) FROM keyring").await,
        1,
        "reopening adds no DEK"
    );
    assert_eq!(ctx.raw_count("SELECT COUNT(*) FROM audit_head").await, 1);
    assert_eq!(ctx.store.verify_audit().await.unwrap(), 1);
    // Opening a new store concurrently from several handles migrates once.
    let fresh = ctx.fresh_location().await;
    let kek = support::KEK;
    let opens = (0..4).map(|_| {
        let loc = fresh.clone();
        tokio::spawn(async move { Store::open(&loc, &kek).await.map(|_| ()) })
    });
    for o in opens.collect::<Vec<_>>() {
        o.await.unwrap().unwrap();
    }
    let s = Store::open(&fresh, &kek).await.unwrap();
    s.put("x", b"y").await.unwrap();
    assert_eq!(s.get("x").await.unwrap().as_deref(), Some(&b"y"[..]));
}

async fn newer_schema_is_refused(ctx: &Ctx) {
    ctx.raw_exec(
        "INSERT INTO schema_version (version, name, applied_ms) VALUES (999, 'from the future', 0)",
    )
    .await;
    let err = ctx.reopen().await.unwrap_err();
    match err {
        StoreError::SchemaTooNew { found, supported } => {
            assert_eq!(found, 999);
            assert!(supported < 999);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The DEK id in a sealed value's header.
fn dek_of(sealed: &[u8]) -> u32 {
    assert_eq!(sealed[0], 1, "format version");
    u32::from_be_bytes([sealed[1], sealed[2], sealed[3], sealed[4]])
}

async fn sealed_store_refuses_data_until_unsealed(ctx: &Ctx) {
    let loc = ctx.fresh_location().await;
    let s = Store::open_sealed(&loc).await.unwrap();
    assert!(s.is_sealed());
    assert!(!s.is_initialized().await.unwrap());
    assert_eq!(s.seal_config().await.unwrap(), None);
    assert!(matches!(
        s.unseal(&[3u8; 32]).await,
        Err(StoreError::NotInitialized)
    ));
    assert!(matches!(s.get("a").await, Err(StoreError::Sealed)));

    let kek = [3u8; 32];
    let config = r#"{"type":"shamir","shares":5,"threshold":3}"#;
    s.initialize(&kek, config).await.unwrap();
    assert!(!s.is_sealed());
    s.put("v/a", b"one").await.unwrap();
    s.audit(&event(1)).await.unwrap();

    s.seal();
    assert!(s.is_sealed());
    assert!(s.is_initialized().await.unwrap(), "known while sealed");
    assert_eq!(s.seal_config().await.unwrap().as_deref(), Some(config));
    assert!(matches!(s.get("v/a").await, Err(StoreError::Sealed)));
    assert!(matches!(s.put("v/b", b"x").await, Err(StoreError::Sealed)));
    assert!(matches!(
        s.put_if_absent("v/b", b"x").await,
        Err(StoreError::Sealed)
    ));
    assert!(matches!(s.delete("v/a").await, Err(StoreError::Sealed)));
    assert!(matches!(s.list("v/").await, Err(StoreError::Sealed)));
    assert!(matches!(
        s.list_page("v/", None, 5).await,
        Err(StoreError::Sealed)
    ));
    assert!(matches!(
        s.transact(vec![Op::Delete { key: "v/a".into() }]).await,
        Err(StoreError::Sealed)
    ));
    assert!(matches!(s.audit(&event(2)).await, Err(StoreError::Sealed)));
    assert!(matches!(
        s.audit_since(0, 10).await,
        Err(StoreError::Sealed)
    ));
    assert!(matches!(s.verify_audit().await, Err(StoreError::Sealed)));
    assert!(matches!(s.rotate_data_key().await, Err(StoreError::Sealed)));
    assert!(matches!(s.reseal("v/").await, Err(StoreError::Sealed)));
    assert!(matches!(s.key_status().await, Err(StoreError::Sealed)));

    // A wrong key leaves it sealed.
    let err = s.unseal(&[4u8; 32]).await.unwrap_err();
    assert!(matches!(err, StoreError::Crypto(_)), "{err}");
    assert!(s.is_sealed());
    assert!(matches!(s.get("v/a").await, Err(StoreError::Sealed)));
    // So does `open` with a wrong key on an initialized store.
    assert!(matches!(
        Store::open(&loc, &[4u8; 32]).await,
        Err(StoreError::Crypto(_))
    ));

    s.unseal(&kek).await.unwrap();
    assert_eq!(s.get("v/a").await.unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(s.verify_audit().await.unwrap(), 1);
    // Another handle opened with the same key (auto-unseal) sees the same data.
    let other = Store::open(&loc, &kek).await.unwrap();
    assert_eq!(
        other.get("v/a").await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(
        other.seal_config().await.unwrap().as_deref(),
        Some(config),
        "open does not overwrite the seal configuration"
    );
}

async fn initialize_happens_once(ctx: &Ctx) {
    // `open` (auto-unseal) records the auto configuration; later initializations are refused.
    assert_eq!(
        ctx.store.seal_config().await.unwrap().as_deref(),
        Some(warden_store::AUTO_SEAL_CONFIG)
    );
    assert!(matches!(
        ctx.store.initialize(&[9u8; 32], "{}").await,
        Err(StoreError::AlreadyInitialized)
    ));
    assert_eq!(ctx.raw_count("SELECT COUNT(*) FROM keyring").await, 1);

    // Concurrent initializations of a new store: exactly one wins.
    let loc = ctx.fresh_location().await;
    let tries = (0..4u8).map(|i| {
        let loc = loc.clone();
        tokio::spawn(async move {
            let s = Store::open_sealed(&loc).await.unwrap();
            s.initialize(&[i + 1; 32], &format!("{{\"n\":{i}}}"))
                .await
                .map(|_| i)
        })
    });
    let mut winners = Vec::new();
    for t in tries {
        match t.await.unwrap() {
            Ok(i) => winners.push(i),
            Err(StoreError::AlreadyInitialized) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let s = Store::open_sealed(&loc).await.unwrap();
    let w = winners[0];
    assert_eq!(
        s.seal_config().await.unwrap(),
        Some(format!("{{\"n\":{w}}}"))
    );
    s.unseal(&[w + 1; 32]).await.unwrap();
}

async fn key_status_follows_rotation(ctx: &Ctx) {
    let before = ctx.store.key_status().await.unwrap();
    assert_eq!(before.term, 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((now - before.install_time_ms).abs() < 60_000);
    ctx.store.put("r/a", b"old").await.unwrap();
    ctx.store.rotate_data_key().await.unwrap();
    let after = ctx.store.key_status().await.unwrap();
    assert_eq!(after.term, 2);
    assert!(after.install_time_ms >= before.install_time_ms);
    assert_eq!(
        ctx.store.get("r/a").await.unwrap().as_deref(),
        Some(&b"old"[..])
    );
}

async fn one_store_leads_at_a_time_until_its_session_ends(ctx: &Ctx) {
    let other = ctx.reopen().await.unwrap();
    if ctx.backend_name() == "sqlite" {
        let err = ctx.store.try_lead("http://a", "1").await.unwrap_err();
        assert!(err.to_string().contains("PostgreSQL"), "{err}");
        assert_eq!(ctx.store.leader().await.unwrap(), None);
        assert!(!ctx.store.supports_ha());
        return;
    }
    assert!(ctx.store.supports_ha());
    assert_eq!(other.leader().await.unwrap(), None, "nobody led yet");
    let first = ctx
        .store
        .try_lead("http://a:8200", "aaaa")
        .await
        .unwrap()
        .expect("the first try wins");
    assert!(first.check().await);
    assert!(
        other
            .try_lead("http://b:8200", "bbbb")
            .await
            .unwrap()
            .is_none(),
        "a second store on the same schema does not get the lock"
    );
    let l = other.leader().await.unwrap().unwrap();
    assert_eq!(
        (l.address.as_str(), l.holder.as_str()),
        ("http://a:8200", "aaaa")
    );
    // Sealed stores can compete too (the lock is not data).
    other.seal();
    assert!(other
        .try_lead("http://b:8200", "bbbb")
        .await
        .unwrap()
        .is_none());
    other.unseal(&support::KEK).await.unwrap();

    // Its session ends (as when its process dies): the holder notices, the other takes over.
    let admin = ctx.pg().await;
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&first.session_pid()])
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while first.check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "the lost lock still checks as held"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let second = loop {
        if let Some(l) = other.try_lead("http://b:8200", "bbbb").await.unwrap() {
            break l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was not released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(second.check().await);
    assert_eq!(ctx.store.leader().await.unwrap().unwrap().holder, "bbbb");
    // Dropping the lock lets it go.
    drop(second);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(_again) = ctx.store.try_lead("http://a:8200", "aaaa").await.unwrap() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a dropped lock was not released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn transact_audited_commits_the_change_and_its_event_together(ctx: &Ctx) {
    let s = &ctx.store;
    s.audit(&event(1)).await.unwrap();
    let seq = s
        .transact_audited(
            vec![
                Op::Put {
                    key: "kv/a".into(),
                    value: b"1".to_vec(),
                },
                Op::PutIfAbsent {
                    key: "kv/b".into(),
                    value: b"2".to_vec(),
                },
            ],
            &event(2),
        )
        .await
        .unwrap();
    assert_eq!(seq, 2);
    assert_eq!(s.get("kv/a").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(s.get("kv/b").await.unwrap().as_deref(), Some(&b"2"[..]));
    let rec = s.audit_since(1, 10).await.unwrap();
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].event, event(2));

    // A conflict applies nothing and appends no event.
    let err = s
        .transact_audited(
            vec![
                Op::Put {
                    key: "kv/a".into(),
                    value: b"changed".to_vec(),
                },
                Op::PutIfAbsent {
                    key: "kv/b".into(),
                    value: b"3".to_vec(),
                },
            ],
            &event(3),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    assert_eq!(s.get("kv/a").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(s.verify_audit().await.unwrap(), 2);

    // Bad input is refused before anything is written.
    let bad = AuditEvent {
        detail: json!({ "big": "a".repeat(warden_store::MAX_EVENT_BYTES + 1) }),
        ..event(4)
    };
    let put = |k: &str| Op::Put {
        key: k.into(),
        value: b"x".to_vec(),
    };
    assert!(s.transact_audited(vec![put("kv/c")], &bad).await.is_err());
    assert!(s
        .transact_audited(vec![put("bad\0key")], &event(5))
        .await
        .is_err());
    assert_eq!(s.get("kv/c").await.unwrap(), None);
    assert_eq!(s.verify_audit().await.unwrap(), 2);

    // An audited write with no ops is a plain append.
    assert_eq!(s.transact_audited(vec![], &event(6)).await.unwrap(), 3);
    s.seal();
    assert!(matches!(
        s.transact_audited(vec![put("kv/d")], &event(7)).await,
        Err(StoreError::Sealed)
    ));
}

async fn concurrent_audited_writes_and_appends_interleave_in_one_chain(ctx: &Ctx) {
    // Writers (some failing on a shared key) and plain appends at once: every success has
    // its own seq, every failure appended nothing, and the chain verifies.
    ctx.store.put("shared", b"taken").await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let s = ctx.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..20u64 {
                let n = t * 100 + i;
                let r = match i % 4 {
                    0 => s.audit(&event(n)).await.map(|seq| (n, seq, false)),
                    1 => s
                        .transact_audited(
                            vec![Op::PutIfAbsent {
                                key: "shared".into(),
                                value: b"x".to_vec(),
                            }],
                            &event(n),
                        )
                        .await
                        .map(|seq| (n, seq, true)),
                    _ => s
                        .transact_audited(
                            vec![Op::Put {
                                key: format!("w/{n}"),
                                value: n.to_string().into_bytes(),
                            }],
                            &event(n),
                        )
                        .await
                        .map(|seq| (n, seq, true)),
                };
                out.push((i, r));
            }
            out
        }));
    }
    let mut seqs = HashSet::new();
    let mut expect_events = std::collections::HashMap::new();
    for t in tasks {
        for (i, r) in t.await.unwrap() {
            if i % 4 == 1 {
                assert!(matches!(r, Err(StoreError::Conflict)), "{r:?}");
                continue;
            }
            let (n, seq, wrote) = r.unwrap();
            assert!(seqs.insert(seq), "seq {seq} handed out twice");
            expect_events.insert(seq, n);
            if wrote {
                let v = ctx.store.get(&format!("w/{n}")).await.unwrap();
                assert_eq!(v, Some(n.to_string().into_bytes()));
            }
        }
    }
    let total = seqs.len() as u64;
    assert_eq!(total, 8 * 15);
    assert_eq!(seqs, (1..=total).collect::<HashSet<u64>>());
    assert_eq!(ctx.store.verify_audit().await.unwrap(), total);
    for rec in ctx.store.audit_since(0, 1000).await.unwrap() {
        assert_eq!(rec.event, event(expect_events[&rec.seq]), "seq {}", rec.seq);
    }
    assert_eq!(
        ctx.store.get("shared").await.unwrap().as_deref(),
        Some(&b"taken"[..])
    );
}

async fn audited_writes_to_one_key_apply_in_audit_order(ctx: &Ctx) {
    // Many writers on the same keys at once (batched together): the value left is the one
    // whose event has the highest seq, i.e. writes apply in the order the chain records.
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let s = ctx.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..10u64 {
                let n = t * 100 + i;
                let mut ops = vec![Op::Put {
                    key: "same".into(),
                    value: n.to_string().into_bytes(),
                }];
                if i % 3 == 0 {
                    ops.push(Op::Delete {
                        key: "other".into(),
                    });
                } else {
                    ops.push(Op::Put {
                        key: "other".into(),
                        value: n.to_string().into_bytes(),
                    });
                }
                let seq = s.transact_audited(ops, &event(n)).await.unwrap();
                out.push((seq, n, i % 3 == 0));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let (_, last_n, last_deleted) = all.iter().max_by_key(|(seq, _, _)| *seq).copied().unwrap();
    assert_eq!(
        ctx.store.get("same").await.unwrap(),
        Some(last_n.to_string().into_bytes())
    );
    let other = ctx.store.get("other").await.unwrap();
    if last_deleted {
        assert_eq!(other, None);
    } else {
        assert_eq!(other, Some(last_n.to_string().into_bytes()));
    }
    assert_eq!(ctx.store.verify_audit().await.unwrap(), 160);
}
