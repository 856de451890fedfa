//! The byte layout of a search block: a run of consecutive clients of one page, in email order,
//! each as its search text and its email, packed into one value of the `client_search_blocks` table.
//!
//! Why blocks: a search that matches one client in a million must look at every client's text.
//! One table entry per client costs a B-tree step and a searcher call per client (over 100 ms
//! for a million); a block of [`MAX_ENTRIES`] clients is one step, and one `memmem` pass runs
//! over the whole block, which is memory-bandwidth work.
//!
//! An entry is `text 0x01 email 0x00`, where `text` is the client's search text (see
//! [`crate::store::search_text`]) and `email` is left empty when it is the text's first line
//! (the usual case: stored emails are already lower-case). Neither byte can appear inside a text
//! ([`entry`] replaces them) or in a needle that matches anything ([`Needle`]), so a match never
//! spans two entries; a match that runs into the email part is checked again on the text alone.

use memchr::memmem::Finder;

/// How many clients a block holds at most; a fuller one is split in two.
pub(super) const MAX_ENTRIES: usize = 128;
/// How full a block is built from scratch, leaving room for clients added later.
pub(super) const BUILD_ENTRIES: usize = 96;
/// Below this, a block is merged with the next one when they fit together.
pub(super) const MERGE_BELOW: usize = MAX_ENTRIES / 4;

const END: u8 = 0x00;
const EMAIL: u8 = 0x01;

/// A case-insensitive "contains" needle (from [`crate::store::search_needle`]), compiled once for
/// a scan of many blocks.
pub(super) struct Needle(Option<Finder<'static>>);

impl Needle {
    pub(super) fn new(needle: &str) -> Needle {
        // A needle with a line break would match across the email and the name; one with a
        // separator byte, across entries. Neither can be typed into a search box.
        let usable = !needle.bytes().any(|b| matches!(b, b'\n' | END | EMAIL));
        Needle(usable.then(|| Finder::new(needle).into_owned()))
    }

    /// The entries of `block` whose text holds the needle, in the block's (email) order.
    pub(super) fn matches<'b>(&self, block: &'b [u8]) -> Matches<'_, 'b> {
        Matches {
            finder: self.0.as_ref(),
            block,
            from: 0,
        }
    }
}

/// Iterator of [`Needle::matches`]: the emails of the matching entries.
pub(super) struct Matches<'n, 'b> {
    finder: Option<&'n Finder<'static>>,
    block: &'b [u8],
    from: usize,
}

impl<'b> Iterator for Matches<'_, 'b> {
    type Item = Result<&'b str, BadBlock>;

    fn next(&mut self) -> Option<Self::Item> {
        let finder = self.finder?;
        loop {
            let rest = self.block.get(self.from..).filter(|r| !r.is_empty())?;
            let at = self.from + finder.find(rest)?;
            let start = memchr::memrchr(END, &self.block[..at]).map_or(0, |i| i + 1);
            // After damage, nothing more of this block is read.
            self.from = self.block.len();
            let entry = match memchr::memchr(END, &self.block[at..]) {
                Some(i) => parse(&self.block[start..at + i]).map(|e| (at + i, e)),
                None => Err(BadBlock),
            };
            let (end, entry) = match entry {
                Ok(found) => found,
                Err(e) => return Some(Err(e)),
            };
            self.from = end + 1;
            let text_end = start + entry.text.len();
            if at + finder.needle().len() <= text_end
                || finder.find(entry.text.as_bytes()).is_some()
            {
                return Some(Ok(entry.email));
            }
        }
    }
}

/// A block whose bytes do not follow the layout: damage or a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BadBlock;

/// One entry of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry<'b> {
    pub(super) text: &'b str,
    pub(super) email: &'b str,
}

/// An entry's bytes (without its end byte) as its parts.
fn parse(bytes: &[u8]) -> Result<Entry<'_>, BadBlock> {
    let split = memchr::memchr(EMAIL, bytes).ok_or(BadBlock)?;
    let text = std::str::from_utf8(&bytes[..split]).map_err(|_| BadBlock)?;
    let stored = std::str::from_utf8(&bytes[split + 1..]).map_err(|_| BadBlock)?;
    let email = if stored.is_empty() {
        text.split_once('\n').map_or(text, |(first, _)| first)
    } else {
        stored
    };
    Ok(Entry { text, email })
}

/// The entries of a block, in order, each with its byte range (end byte included).
pub(super) fn entries(
    block: &[u8],
) -> impl Iterator<Item = Result<(std::ops::Range<usize>, Entry<'_>), BadBlock>> {
    let mut from = 0;
    std::iter::from_fn(move || {
        if from >= block.len() {
            return None;
        }
        let Some(len) = memchr::memchr(END, &block[from..]) else {
            from = block.len();
            return Some(Err(BadBlock));
        };
        let range = from..from + len + 1;
        from = range.end;
        Some(parse(&block[range.start..range.end - 1]).map(|e| (range, e)))
    })
}

/// The number of entries in a block.
pub(super) fn count(block: &[u8]) -> usize {
    memchr::memchr_iter(END, block).count()
}

/// The email of a block's first entry.
pub(super) fn first_email(block: &[u8]) -> Result<&str, BadBlock> {
    entries(block).next().ok_or(BadBlock)?.map(|(_, e)| e.email)
}

/// Appends the entry of the client with `email` and search text `text`.
pub(super) fn entry(out: &mut Vec<u8>, email: &str, text: &str) {
    let clean = |b: u8| if matches!(b, END | EMAIL) { b' ' } else { b };
    out.extend(text.bytes().map(clean));
    out.push(EMAIL);
    if text.split_once('\n').map_or(text, |(first, _)| first) != email {
        out.extend(email.bytes().map(clean));
    }
    out.push(END);
}

/// `block` with the entry for `email` put in its place in email order, replacing any there.
pub(super) fn with_entry(block: &[u8], email: &str, text: &str) -> Result<Vec<u8>, BadBlock> {
    let mut out = Vec::with_capacity(block.len() + text.len() + email.len() + 2);
    let mut placed = false;
    for item in entries(block) {
        let (range, e) = item?;
        if !placed && email <= e.email {
            entry(&mut out, email, text);
            placed = true;
            if email == e.email {
                continue;
            }
        }
        out.extend_from_slice(&block[range]);
    }
    if !placed {
        entry(&mut out, email, text);
    }
    Ok(out)
}

/// `block` without the entry for `email`; `None` when it has no such entry.
pub(super) fn without_entry(block: &[u8], email: &str) -> Result<Option<Vec<u8>>, BadBlock> {
    for item in entries(block) {
        let (range, e) = item?;
        if e.email == email {
            let mut out = Vec::with_capacity(block.len() - range.len());
            out.extend_from_slice(&block[..range.start]);
            out.extend_from_slice(&block[range.end..]);
            return Ok(Some(out));
        }
    }
    Ok(None)
}

/// A block cut into two halves, each in email order.
pub(super) fn halves(block: &[u8]) -> Result<(&[u8], &[u8]), BadBlock> {
    let middle = count(block) / 2;
    let (range, _) = entries(block).nth(middle).ok_or(BadBlock)??;
    Ok(block.split_at(range.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_of(clients: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (email, text) in clients {
            out = with_entry(&out, email, text).expect("well-formed");
        }
        out
    }

    fn emails(block: &[u8]) -> Vec<&str> {
        entries(block)
            .map(|e| e.expect("well-formed").1.email)
            .collect()
    }

    fn found<'b>(needle: &str, block: &'b [u8]) -> Vec<&'b str> {
        Needle::new(needle)
            .matches(block)
            .collect::<Result<_, _>>()
            .expect("well-formed")
    }

    #[test]
    fn entries_stay_in_email_order_whatever_order_they_come_in() {
        let block = block_of(&[
            ("c@x.org", "c@x.org\ncy"),
            ("a@x.org", "a@x.org\nann"),
            ("b@x.org", "b@x.org\nbea"),
        ]);
        assert_eq!(emails(&block), ["a@x.org", "b@x.org", "c@x.org"]);
        assert_eq!(count(&block), 3);
        assert_eq!(first_email(&block), Ok("a@x.org"));
    }

    #[test]
    fn putting_an_email_again_replaces_its_entry() {
        let block = block_of(&[("a@x.org", "a@x.org\nann"), ("b@x.org", "b@x.org\nbea")]);
        let block = with_entry(&block, "a@x.org", "a@x.org\nanna").expect("put");
        assert_eq!(emails(&block), ["a@x.org", "b@x.org"]);
        assert_eq!(found("anna", &block), ["a@x.org"]);
    }

    #[test]
    fn a_search_finds_text_in_the_email_or_the_name_but_never_across_entries() {
        let block = block_of(&[
            ("ann@x.org", "ann@x.org\nann smith"),
            ("bob@y.org", "bob@y.org\nbob jones"),
        ]);
        assert_eq!(found("smith", &block), ["ann@x.org"]);
        assert_eq!(found("y.org", &block), ["bob@y.org"]);
        assert_eq!(found("o", &block), ["ann@x.org", "bob@y.org"]);
        // "smith" ends one entry and "bob" starts the next: no match across them.
        assert!(found("smithbob", &block).is_empty());
        assert!(
            found("org\nann", &block).is_empty(),
            "line breaks match nothing"
        );
        assert!(found("smith\u{1}", &block).is_empty());
        assert!(found("\0", &block).is_empty());
    }

    #[test]
    fn an_email_stored_apart_from_the_text_is_not_searched_itself() {
        // An email that is not the text's first line (not lower-case) is kept after the text;
        // a match inside it alone is not a match of the client's text.
        let block = block_of(&[
            ("Ann@X.org", "ann@x.org\nann"),
            ("zed@x.org", "zed@x.org\nzed"),
        ]);
        assert_eq!(emails(&block), ["Ann@X.org", "zed@x.org"]);
        assert!(found("@X", &block).is_empty());
        assert_eq!(found("ann@x", &block), ["Ann@X.org"]);
    }

    #[test]
    fn separator_bytes_in_a_name_cannot_break_the_layout() {
        let block = block_of(&[("a@x.org", "a@x.org\nbad\u{0}name\u{1}here")]);
        assert_eq!(emails(&block), ["a@x.org"]);
        assert_eq!(found("bad name here", &block), ["a@x.org"]);
    }

    #[test]
    fn removing_and_halving_keep_the_other_entries() {
        let block = block_of(&[
            ("a@x.org", "a@x.org\na"),
            ("b@x.org", "b@x.org\nb"),
            ("c@x.org", "c@x.org\nc"),
            ("d@x.org", "d@x.org\nd"),
            ("e@x.org", "e@x.org\ne"),
        ]);
        let smaller = without_entry(&block, "c@x.org")
            .expect("well-formed")
            .expect("present");
        assert_eq!(
            emails(&smaller),
            ["a@x.org", "b@x.org", "d@x.org", "e@x.org"]
        );
        assert_eq!(without_entry(&smaller, "c@x.org"), Ok(None));
        let (low, high) = halves(&block).expect("halves");
        assert_eq!(emails(low), ["a@x.org", "b@x.org"]);
        assert_eq!(emails(high), ["c@x.org", "d@x.org", "e@x.org"]);
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        assert_eq!(first_email(b"no end byte"), Err(BadBlock));
        assert_eq!(first_email(b"no email separator\0"), Err(BadBlock));
        let matches: Vec<_> = Needle::new("end").matches(b"no end byte").collect();
        assert_eq!(matches, [Err(BadBlock)]);
        assert_eq!(with_entry(b"\xff\x01\0", "a@x.org", "a"), Err(BadBlock));
    }
}
