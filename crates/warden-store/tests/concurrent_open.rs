//! Several processes (or handles) opening the same new SQLite store at once all succeed: the
//! switch to WAL, which SQLite may refuse at once with `SQLITE_BUSY` while another opener holds
//! a lock, is retried within the busy timeout. (Before that, about one open in a few hundred
//! failed with "database is locked".)

use warden_store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_opens_of_a_new_sqlite_store_all_succeed() {
    let kek = [7u8; 32];
    let mut failures = Vec::new();
    for round in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().join("store.db").display().to_string();
        let opens: Vec<_> = (0..6)
            .map(|_| {
                let location = location.clone();
                tokio::spawn(async move { Store::open(&location, &kek).await.map(|_| ()) })
            })
            .collect();
        for o in opens {
            if let Err(e) = o.await.unwrap() {
                failures.push(format!("round {round}: {e}"));
            }
        }
        // Every opener sees one store: a value written through a new handle reads back.
        let s = Store::open(&location, &kek).await.unwrap();
        s.put("k", b"v").await.unwrap();
        assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    }
    assert!(
        failures.is_empty(),
        "{} of 360 opens failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}
