//! The Grafana dashboard and the Prometheus alerting rules in `deploy/` (issue 13,
//! "dashboards and alerts") query only metrics Warden exports: every `warden_…` name in
//! them is a series the gateway's, a sidecar's or the authority's registry writes, with the
//! suffixes its type gives it (`_total`, `_bucket`, `_sum`, `_count`). A renamed metric fails
//! here, not on an on-call engineer's empty panel. (`promtool check rules` and `promtool test
//! rules` on the same files run in `scripts/dev-smoke.sh`, which installs promtool.)

use std::collections::BTreeSet;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every series name the registries can write (families without a series yet included).
fn exported() -> BTreeSet<String> {
    let gateway = warden_telemetry::Metrics::new();
    let authority = warden_authority::metrics::Metrics::new();
    gateway
        .series_names()
        .into_iter()
        .chain(authority.series_names())
        .collect()
}

/// Every `warden_…` name in a file.
fn referenced(file: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("warden_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        // A name ending in `_` is a prefix in prose (`warden_upstream_*`), not a query.
        if boundary && !text[start..end].ends_with('_') {
            out.insert(text[start..end].to_owned());
        }
        i = end;
    }
    out
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_query_is_one_warden_exports() {
    let exported = exported();
    assert!(
        exported.contains("warden_requests_total")
            && exported.contains("warden_request_duration_seconds_bucket")
            && exported.contains("warden_authority_sealed")
            && exported.contains("warden_sidecar_svid_expiry_timestamp_seconds"),
        "the registries' names were not read: {exported:?}"
    );
    let files = [
        "deploy/prometheus/warden-alerts.yml",
        "deploy/prometheus/warden-alerts.test.yml",
        "deploy/grafana/warden.json",
    ];
    let mut unknown = Vec::new();
    for file in files {
        let names = referenced(file);
        assert!(names.len() >= 5, "{file} queries only {names:?}");
        for n in names {
            if !exported.contains(&n) {
                unknown.push(format!("{file}: {n}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "queried but not exported:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn the_dashboard_is_grafana_json_with_a_query_in_every_panel() {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/warden.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(dash["uid"], "warden-overview");
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "duplicate id: {p}"
        );
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(
            !targets.is_empty(),
            "a panel without a query: {}",
            p["title"]
        );
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            assert!(expr.contains("warden_"), "{}: {expr}", p["title"]);
            assert!(
                expr.contains("job=~\"$job\""),
                "{}: not filtered by $job: {expr}",
                p["title"]
            );
            queries += 1;
        }
    }
    assert!(queries >= 30, "{queries} queries");
    // Each group of the issue has its row.
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    for want in [
        "Gateway",
        "Security",
        "Upstreams",
        "certificates",
        "Authority",
    ] {
        assert!(
            rows.iter().any(|r| r.contains(want)),
            "no {want} row: {rows:?}"
        );
    }
}
