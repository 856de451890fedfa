//! A shop's sign-in link: the `signin_url` a grant answers with when it asks for
//! `"signin": true`, which the shop sends the buyer's browser to right after payment, so the
//! buyer lands on the paid page without typing a code.
//!
//! | method | path                   | what                                                      |
//! |--------|------------------------|-----------------------------------------------------------|
//! | GET    | `/signin?t=…&page=…`   | the confirm page naming the account (spends nothing)       |
//! | POST   | `/signin`              | spend the link, sign in, 303 to the page's first path      |
//!
//! A GET never spends the link: mail and chat scanners, and browsers that prefetch, follow
//! links. The confirm page asks no "did you ask for this?" question, unlike a mailed link
//! opened elsewhere: the shop asked for the link, not a browser, so there is no browser to
//! compare with; the account is named, so whoever opens it sees whose account it is.
//!
//! **The token.** `HMAC(hash key, "signin-link" ‖ API key name ‖ order id ‖ nonce)`, with a
//! random 16-byte nonce per link. The store keeps only the token's keyed hash, under a purpose
//! of its own (`"signin"`), so a sign-in link's token never works as a mailed link's (purpose
//! `"token"`, another table) or the other way round; the order record keeps the nonce. A
//! retried order can so hand out the same link again while it is live, computed afresh, without
//! the token ever being stored; the nonce alone gives nothing without the secret.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use rand::RngCore;

use super::flow::Ctx;
use super::keys::{KeySet, Keys};
use super::steps::{query_map, read_form};
use super::{Auth, input};
use crate::body::Body;
use crate::error::HttpError;
use crate::metrics::LoginEvent;
use crate::runtime::blocking;
use crate::store::{
    AuditEvent, AuditKind, IssuedSignin, SecretHash, SigninNonce, SigninRecord, Timestamp,
};
use crate::ui::{Page, html_response};

/// The purpose the store's hash of a sign-in link's token is made under.
pub(crate) const HASH_PURPOSE: &str = "signin";
/// The purpose a token is derived under: distinct from every stored hash's.
const DERIVE_PURPOSE: &str = "signin-link";

/// The clear token of the link `nonce` makes for the order `order` of the API key `key_name`,
/// under `keys`. The same inputs always give the same token.
pub fn link_token(
    keys: &KeySet,
    key_name: &str,
    order: Option<&str>,
    nonce: &SigninNonce,
) -> String {
    let mac = keys.hash(
        DERIVE_PURPOSE,
        &[
            key_name.as_bytes(),
            order.unwrap_or("").as_bytes(),
            nonce.as_slice(),
        ],
    );
    URL_SAFE_NO_PAD.encode(mac)
}

/// The hash the link whose token is `token` is stored under, with `keys`.
pub fn link_hash(keys: &KeySet, token: &str) -> SecretHash {
    keys.hash(HASH_PURPOSE, &[token.as_bytes()])
}

/// A fresh nonce for a new link.
pub fn new_nonce() -> SigninNonce {
    let mut nonce = [0; 16];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

/// The tokens and hashes of one grant's sign-in links, under the keys in force when the grant
/// arrived (a rotation meanwhile changes nothing for it).
pub struct LinkMaker {
    keys: Arc<Keys>,
    key_name: String,
    order: Option<String>,
}

impl LinkMaker {
    /// The hashes the link of `nonce` may be stored under: one per accepted key, current first.
    /// A new link is stored under the first; an order's earlier link may be under any.
    pub fn hashes(&self, nonce: &SigninNonce) -> Vec<SecretHash> {
        self.keys
            .accepted()
            .into_iter()
            .map(|k| link_hash(k, &self.token_under(k, nonce)))
            .collect()
    }

    /// The clear token of a link the store handed out: derived under the key whose hash it is
    /// stored under. `None` if no accepted key gives that hash (it was rotated out meanwhile).
    pub fn token(&self, issued: &IssuedSignin) -> Option<String> {
        self.keys.accepted().into_iter().find_map(|k| {
            let token = self.token_under(k, &issued.nonce);
            (link_hash(k, &token) == issued.hash).then_some(token)
        })
    }

    fn token_under(&self, keys: &KeySet, nonce: &SigninNonce) -> String {
        link_token(keys, &self.key_name, self.order.as_deref(), nonce)
    }
}

impl Auth {
    /// How a grant by the API key `key_name`, for the order `order` if any, makes its links.
    pub fn signin_links(&self, key_name: &str, order: Option<&str>) -> LinkMaker {
        LinkMaker {
            keys: self.keys.load_full(),
            key_name: key_name.to_owned(),
            order: order.map(str::to_owned),
        }
    }

    /// The record of a new link to `page` of `site` for `email`, valid for
    /// `auth.signin_link_ttl` from `now`; `None` when the site or page is not configured.
    pub fn signin_record(
        &self,
        site: &str,
        page: &str,
        email: &str,
        order: Option<&str>,
        now: Timestamp,
    ) -> Option<SigninRecord> {
        let site = self.sites.iter().find(|s| s.name == site)?;
        let page = site.pages.iter().find(|p| p.id == page)?;
        let ttl = i64::try_from(self.config.signin_link_ttl.as_secs()).unwrap_or(i64::MAX);
        Some(SigninRecord {
            site: site.name.clone(),
            page: page.id.clone(),
            email: email.to_owned(),
            next: page.first_path.clone(),
            expires_at: now.saturating_add(ttl),
            order: order.map(str::to_owned),
        })
    }

    /// The address of the link with `token` to `page` of `site`: on the site's `public_url`,
    /// never on the host a request came to. `None` when the site has no `public_url`.
    pub fn signin_url(&self, site: &str, page: &str, token: &str) -> Option<String> {
        let site = self.sites.iter().find(|s| s.name == site)?;
        let base = site.public_url.as_deref()?.trim_end_matches('/');
        let page: String = form_urlencoded::byte_serialize(page.as_bytes()).collect();
        Some(format!(
            "{base}{}/signin?t={token}&page={page}",
            self.prefix
        ))
    }
}

impl Ctx<'_> {
    /// `GET /signin`: the confirm page of a live link of this site, or the page offering the
    /// code sign-in. Reads only.
    pub(super) async fn signin_confirm(
        &self,
        req: &Request<Incoming>,
    ) -> Result<Response<Body>, HttpError> {
        let query = query_map(req);
        let token = query.get("t").map(String::as_str).unwrap_or("");
        match self.peek_signin(token).await? {
            Some(record) => self.signin_page(StatusCode::OK, token, &record, None),
            None => self.signin_gone(query.get("page").map(String::as_str)),
        }
    }

    /// `POST /signin`: spends the link and signs the buyer in, landing on the link's page.
    pub(super) async fn signin_spend(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, HttpError> {
        let (headers, form) = read_form(req).await?;
        let token = form.get("token").map(String::as_str).unwrap_or("");
        let page = form.get("page").map(String::as_str);
        if !self.csrf_ok(&headers, &form) {
            return match self.peek_signin(token).await? {
                Some(record) => {
                    self.signin_page(StatusCode::FORBIDDEN, token, &record, Some("csrf"))
                }
                None => self.signin_gone(page),
            };
        }
        let hashes = self
            .auth
            .keys
            .load()
            .hashes(HASH_PURPOSE, &[token.as_bytes()]);
        let used = self.event(AuditKind::SigninLinkUsed, None, "");
        let (auth, site) = (self.auth.clone(), self.site.name.clone());
        let taken = blocking(move || {
            auth.store
                .take_signin(&hashes, &site, auth.now(), &|record| {
                    used_event(&used, record)
                })
                .map_err(HttpError::store)
        })
        .await?;
        match taken {
            Some(record) => {
                self.count(LoginEvent::SigninLinkVerified);
                let next = self.next_or_default(Some(&record.next));
                self.sign_in(&record.email, &next).await
            }
            None => {
                self.count(LoginEvent::SigninLinkFailed);
                self.signin_gone(page)
            }
        }
    }

    /// The live link of this site with `token`, without spending it.
    async fn peek_signin(&self, token: &str) -> Result<Option<SigninRecord>, HttpError> {
        let hashes = self
            .auth
            .keys
            .load()
            .hashes(HASH_PURPOSE, &[token.as_bytes()]);
        let at = self.auth.now();
        let record = self
            .auth
            .read(move |store| store.peek_signin(&hashes, at))
            .await
            .map_err(HttpError::store)?;
        Ok(record.filter(|r| r.site == self.site.name))
    }

    fn signin_page(
        &self,
        status: StatusCode,
        token: &str,
        record: &SigninRecord,
        error: Option<&str>,
    ) -> Result<Response<Body>, HttpError> {
        self.render(
            status,
            &Page::SigninConfirm {
                frame: self.frame_for(&record.next),
                token,
                page: &record.page,
                csrf: &self.csrf,
                account: &input::mask_email(&record.email),
                error,
            },
        )
    }

    /// `410` for a link used, expired, unknown or of another site, with a button to the email
    /// form for its page (`page`, the id the link carried), or for the site when that names no
    /// page of this site.
    fn signin_gone(&self, page: Option<&str>) -> Result<Response<Body>, HttpError> {
        let page = page.and_then(|id| self.site.pages.iter().find(|p| p.id == id));
        let (frame, login) = match page {
            Some(page) => {
                let next: String =
                    form_urlencoded::byte_serialize(page.first_path.as_bytes()).collect();
                (
                    self.frame_for(&page.first_path),
                    format!("{}/login?next={next}", self.auth.prefix),
                )
            }
            None => (self.frame(), format!("{}/login", self.auth.prefix)),
        };
        let html = self
            .auth
            .templates
            .page(
                &Page::SigninGone {
                    frame,
                    login: &login,
                },
                self.lang,
            )
            .map_err(|e| HttpError::Internal(format!("template: {e}")))?;
        Ok(html_response(StatusCode::GONE, html))
    }
}

/// The audit entry of a spent link: the visitor's entry `base` (with their address) about the
/// link's page and email, and the order it was bought with.
fn used_event(base: &AuditEvent, record: &SigninRecord) -> AuditEvent {
    let detail = match &record.order {
        Some(order) => format!("order {order}; {}", base.detail),
        None => base.detail.clone(),
    };
    AuditEvent {
        site: Some(record.site.clone()),
        page: Some(record.page.clone()),
        email: Some(record.email.clone()),
        detail,
        ..base.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(master: &[u8]) -> KeySet {
        KeySet::from_master(master)
    }

    const A: &[u8] = b"0123456789abcdef0123456789abcdef-a";
    const B: &[u8] = b"0123456789abcdef0123456789abcdef-b";

    #[test]
    fn a_token_is_the_same_for_the_same_order_and_nonce_and_differs_otherwise() {
        let (a, b) = (keys(A), keys(B));
        let token = link_token(&a, "shop", Some("1001"), &[1; 16]);
        assert_eq!(token.len(), 43, "32 bytes, URL-safe");
        assert!(
            token
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(token, link_token(&a, "shop", Some("1001"), &[1; 16]));
        for other in [
            link_token(&a, "shop", Some("1001"), &[2; 16]),
            link_token(&a, "shop", Some("1002"), &[1; 16]),
            link_token(&a, "shop2", Some("1001"), &[1; 16]),
            link_token(&a, "shop", None, &[1; 16]),
            link_token(&b, "shop", Some("1001"), &[1; 16]),
            // The parts are length-prefixed: moving a character across them changes the token.
            link_token(&a, "shop1", Some("001"), &[1; 16]),
        ] {
            assert_ne!(token, other);
        }
    }

    #[test]
    fn a_stored_hash_is_neither_the_token_nor_a_mailed_links_hash() {
        let a = keys(A);
        let token = link_token(&a, "shop", Some("1001"), &[1; 16]);
        let stored = link_hash(&a, &token);
        assert_ne!(URL_SAFE_NO_PAD.encode(stored), token);
        assert_ne!(
            stored,
            a.hash("token", &[token.as_bytes()]),
            "a mailed link's token hash"
        );
        assert_ne!(stored, link_hash(&keys(B), &token));
    }

    #[test]
    fn the_maker_finds_the_key_a_handed_out_link_was_stored_under() {
        let rotated = Arc::new(Keys::from_master(B));
        let maker = LinkMaker {
            keys: rotated,
            key_name: "shop".into(),
            order: Some("1001".into()),
        };
        let nonce = [9; 16];
        let hashes = maker.hashes(&nonce);
        assert_eq!(hashes.len(), 1);
        let issued = IssuedSignin {
            nonce,
            hash: hashes[0],
            expires_at: 0,
            fresh: true,
        };
        let token = maker.token(&issued).expect("derivable");
        assert_eq!(token, link_token(&keys(B), "shop", Some("1001"), &nonce));
        assert_eq!(link_hash(&keys(B), &token), issued.hash);
        let foreign = IssuedSignin {
            hash: link_hash(&keys(A), &token),
            ..issued
        };
        assert_eq!(maker.token(&foreign), None, "no accepted key gives it");
    }

    #[test]
    fn the_spent_links_audit_entry_names_the_buyer_the_page_and_the_order() {
        let base = AuditEvent {
            at: 5,
            kind: AuditKind::SigninLinkUsed,
            site: Some("school".into()),
            page: None,
            email: None,
            actor: "visitor".into(),
            detail: "from 192.0.2.1".into(),
        };
        let record = SigninRecord {
            site: "school".into(),
            page: "course".into(),
            email: "ann@example.com".into(),
            next: "/course/".into(),
            expires_at: 10,
            order: Some("1001".into()),
        };
        let event = used_event(&base, &record);
        assert_eq!(event.page.as_deref(), Some("course"));
        assert_eq!(event.email.as_deref(), Some("ann@example.com"));
        assert_eq!(event.detail, "order 1001; from 192.0.2.1");
        assert_eq!(event.kind, AuditKind::SigninLinkUsed);
    }
}
