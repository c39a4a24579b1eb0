//! Property tests for the two parsers that see raw client input before anything else:
//! path normalisation and the HTTP/1.1 framing inspector.

use proptest::prelude::*;
use warden_proxy::h1_inspect::Inspector;
use warden_proxy::normalize::normalize_path;

/// Paths built from the pieces that matter for bypasses.
fn path_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just("//".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just("%2f".to_string()),
        Just("%5c".to_string()),
        Just("%00".to_string()),
        Just("%41".to_string()),
        Just("%zz".to_string()),
        Just(";".to_string()),
        Just("\\".to_string()),
        Just("admin".to_string()),
        Just("public".to_string()),
        "[a-z0-9_~-]{1,4}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
}

proptest! {
    #[test]
    fn normalised_paths_are_canonical_and_stable(raw in path_strategy(), allow in any::<bool>()) {
        if let Ok(p) = normalize_path(&raw, allow) {
            // Canonical: absolute, no empty, `.` or `..` segments, nothing a later decode
            // could turn into a separator or a dot segment.
            prop_assert!(p.starts_with('/'));
            prop_assert!(!p.contains("//"), "{raw:?} -> {p:?}");
            for seg in p.split('/').skip(1) {
                prop_assert!(seg != "." && seg != "..", "{raw:?} -> {p:?}");
            }
            prop_assert!(!p.contains('\\') && !p.contains('\0'));
            prop_assert!(!p.to_ascii_lowercase().contains("%2e"), "{raw:?} -> {p:?}");
            if !allow {
                prop_assert!(!p.to_ascii_lowercase().contains("%2f"));
                prop_assert!(!p.to_ascii_lowercase().contains("%5c"));
            }
            // Stable: normalising again changes nothing.
            prop_assert_eq!(normalize_path(&p, allow), Ok(p.clone()));
        }
    }

    #[test]
    fn inspector_verdicts_do_not_depend_on_how_bytes_are_split(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..4),
        dup_cl in any::<bool>(),
        splits in prop::collection::vec(1usize..17, 1..8),
    ) {
        // A stream of requests, some chunked, some with Content-Length; one may carry a
        // duplicate Content-Length.
        let mut stream = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            if i % 2 == 0 {
                stream.extend_from_slice(format!("POST /{i} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n", body.len()).as_bytes());
                if dup_cl && i == 0 {
                    stream.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
                }
                stream.extend_from_slice(b"\r\n");
                stream.extend_from_slice(body);
            } else {
                stream.extend_from_slice(format!("POST /{i} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").as_bytes());
                if !body.is_empty() {
                    stream.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                    stream.extend_from_slice(body);
                    stream.extend_from_slice(b"\r\n");
                }
                stream.extend_from_slice(b"0\r\n\r\n");
            }
        }
        let whole = {
            let mut i = Inspector::default();
            i.feed(&stream);
            std::iter::from_fn(|| i.next_verdict()).collect::<Vec<_>>()
        };
        let split = {
            let mut i = Inspector::default();
            let mut rest: &[u8] = &stream;
            let mut k = 0;
            while !rest.is_empty() {
                let n = splits[k % splits.len()].min(rest.len());
                i.feed(&rest[..n]);
                rest = &rest[n..];
                k += 1;
            }
            std::iter::from_fn(|| i.next_verdict()).collect::<Vec<_>>()
        };
        prop_assert_eq!(&whole, &split);
        // One verdict per request, whatever the bodies contain (a body that looks like a
        // request head is not a request).
        prop_assert_eq!(whole.len(), bodies.len());
        prop_assert_eq!(whole[0].duplicate_content_length, dup_cl);
        prop_assert!(whole[1..].iter().all(|v| !v.is_ambiguous()));
    }
}
