//! Which protected page, if any, a request path belongs to: the security boundary.
//!
//! Placeholder matcher: exact prefix match on the raw path. The full normalisation (decoding,
//! dot-segments, slashes, backslashes, case) replaces it.

use crate::config::PageConfig;

/// A path that cannot be interpreted safely; answered with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsafe request path: {0}")]
pub struct PathError(pub &'static str);

/// Indexes (into the site's `pages`) of the pages a path falls under.
pub type PageSet = Vec<usize>;

/// Matches request paths against one site's pages.
#[derive(Debug, Clone, Default)]
pub struct PageMatcher {
    pages: Vec<(usize, Vec<String>)>,
}

impl PageMatcher {
    /// Prepares matching for a site's pages.
    pub fn new(pages: &[PageConfig]) -> PageMatcher {
        PageMatcher {
            pages: pages
                .iter()
                .enumerate()
                .map(|(i, p)| (i, p.paths.clone()))
                .collect(),
        }
    }

    /// Whether the site has any protected page at all (the common fast path when not).
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// The pages `raw_path` (the request target's path, still percent-encoded) falls under.
    pub fn pages_for(&self, raw_path: &str) -> Result<PageSet, PathError> {
        Ok(self
            .pages
            .iter()
            .filter(|(_, prefixes)| prefixes.iter().any(|p| raw_path.starts_with(p.as_str())))
            .map(|(i, _)| *i)
            .collect())
    }
}
