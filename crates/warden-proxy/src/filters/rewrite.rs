//! Rewrite: a route's `rewrite_prefix` replaces the matched `path_prefix` in the path sent
//! upstream (routing and every other filter see the client's normalised path).

use super::{Exchange, Flow};

/// `prefix` (the route's `path_prefix`) becomes `with`.
pub(crate) struct Rewrite {
    pub(crate) prefix: String,
    pub(crate) with: String,
}

impl Rewrite {
    pub(crate) fn request(&self, ex: &mut Exchange<'_>) -> Flow {
        ex.upstream_path = self.apply(&ex.path);
        Flow::Continue
    }

    /// The path to send upstream, when it differs.
    pub(crate) fn apply(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix(self.prefix.as_str())?;
        let mut out = self.with.clone();
        if out.ends_with('/') && rest.starts_with('/') {
            out.pop();
        } else if !out.ends_with('/') && !rest.is_empty() && !rest.starts_with('/') {
            out.push('/');
        }
        out.push_str(rest);
        Some(out)
    }
}
