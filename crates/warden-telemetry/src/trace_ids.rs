//! The ids that join a log line to its trace: W3C trace context's trace id and the span id of
//! the operation the line is about, written as lower-case hex (`trace_id`, `span_id`) as
//! OpenTelemetry's log data model and every trace backend spell them.

use serde::ser::SerializeStruct;
use serde::Serialize;

/// A trace id and a span id (both non-zero when valid).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TraceIds {
    /// 16 bytes.
    pub trace_id: u128,
    /// 8 bytes.
    pub span_id: u64,
}

tokio::task_local! {
    static CURRENT: TraceIds;
}

impl TraceIds {
    /// Runs `f` with these ids as the current request's: security events emitted inside it
    /// (in the same task) carry them.
    pub async fn scope<F: std::future::Future>(self, f: F) -> F::Output {
        CURRENT.scope(self, f).await
    }

    /// The ids of the request the current task serves, inside [`TraceIds::scope`].
    pub fn current() -> Option<TraceIds> {
        CURRENT.try_with(|ids| *ids).ok()
    }

    /// The trace id as 32 hex digits.
    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id as 16 hex digits.
    pub fn span_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

impl Serialize for TraceIds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("TraceIds", 2)?;
        st.serialize_field("trace_id", &self.trace_hex())?;
        st.serialize_field("span_id", &self.span_hex())?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_written_as_zero_padded_lower_hex() {
        let ids = TraceIds {
            trace_id: 0x0af7651916cd43dd8448eb211c80319c,
            span_id: 0xb7ad6b7169203331,
        };
        assert_eq!(
            serde_json::to_value(ids).unwrap(),
            serde_json::json!({"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"})
        );
        let small = TraceIds {
            trace_id: 1,
            span_id: 2,
        };
        assert_eq!(small.trace_hex().len(), 32);
        assert_eq!(small.span_hex(), "0000000000000002");
    }
}
