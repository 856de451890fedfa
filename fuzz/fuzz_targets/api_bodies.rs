//! The JSON bodies and queries of the grant endpoint and the admin API, raw or built from
//! fields: never panic, and whatever is accepted is valid. A grant names a configured page the
//! key covers, a normalised email, a valid name and order id, and an end of access in the future
//! and at most 36,500 days away (or none); admin bodies go through the same checks the store
//! operations make; queries give limits within 1 to 1,000.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use pagegate::api::clients::{ClientQuery, MAX_DAYS, access_end, check_email, check_name};
use pagegate::api::grants::{self, MAX_ORDER_ID_CHARS};
use pagegate::api::json::Object;
use pagegate::config::Config;
use pagegate::fuzzing::{admin_audit_query, admin_client_change, admin_client_input};
use serde_json::{Map, Value, json};

const NOW: i64 = 1_700_000_000;

static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    let text = "[server]\nlisten = \"127.0.0.1:1\"\n\
        [[site]]\nname = \"school\"\nhosts = [\"a\"]\nupstream = \"http://127.0.0.1:2\"\npublic_url = \"https://school.example\"\n\
        [[site.page]]\nid = \"course\"\npaths = [\"/course/\"]\n\
        [[site.page]]\nid = \"notes\"\npaths = [\"/notes/\"]\n\
        [[site]]\nname = \"shop\"\nhosts = [\"b\"]\nupstream = \"http://127.0.0.1:3\"\npublic_url = \"https://shop.example\"\n\
        [[site.page]]\nid = \"extras\"\npaths = [\"/extras/\"]\n\
        [[api_key]]\nname = \"all\"\nsecret = \"0123456789abcdef01234567\"\nscopes = [\"grant\"]\n\
        [[api_key]]\nname = \"course only\"\nsecret = \"abcdef0123456789abcdef01\"\nscopes = [\"grant\"]\npages = [\"course\"]\n\
        [[api_key]]\nname = \"school only\"\nsecret = \"fedcba9876543210fedcba98\"\nscopes = [\"admin\"]\nsites = [\"school\"]\n";
    pagegate::config::parse_str(text, Path::new("fuzz.toml"), Path::new("/"))
        .unwrap_or_else(|e| panic!("{e}"))
});

#[derive(Debug, Arbitrary)]
enum Body<'a> {
    Raw(&'a [u8]),
    Fields(Vec<(u8, Json<'a>)>),
}

#[derive(Debug, Arbitrary)]
enum Json<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'a str),
    Date(u16, u8, u8),
    Page(u8),
    List(Vec<i8>),
}

const FIELDS: &[&str] = &[
    "page",
    "email",
    "name",
    "days",
    "until",
    "order_id",
    "notify",
    "unlimited",
    "extra",
];
const PAGES: &[&str] = &["course", "notes", "extras", "nope", "", " course"];

impl Body<'_> {
    fn bytes(&self) -> Vec<u8> {
        let fields = match self {
            Body::Raw(bytes) => return bytes.to_vec(),
            Body::Fields(fields) => fields,
        };
        let mut map = Map::new();
        for (field, value) in fields {
            let value = match value {
                Json::Null => Value::Null,
                Json::Bool(b) => json!(b),
                Json::Int(i) => json!(i),
                Json::Float(f) => json!(f),
                Json::Text(t) => json!(t),
                Json::Date(y, m, d) => json!(format!("{y:04}-{m:02}-{d:02}")),
                Json::Page(p) => json!(PAGES[usize::from(*p) % PAGES.len()]),
                Json::List(l) => json!(l),
            };
            map.insert(FIELDS[usize::from(*field) % FIELDS.len()].to_owned(), value);
        }
        serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
    }
}

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    key: u8,
    body: Body<'a>,
    page: &'a str,
    query: &'a str,
    now_offset: i32,
}

fuzz_target!(|input: Input<'_>| {
    let config = &*CONFIG;
    let body = input.body.bytes();
    let now = NOW + i64::from(input.now_offset);
    let key = &config.api_keys[usize::from(input.key) % config.api_keys.len()];

    if let Ok(grant) = grants::parse(config, key, &body, now) {
        let (site, page) = config
            .sites
            .iter()
            .find_map(|s| s.page(&grant.page).map(|p| (s, p)))
            .unwrap_or_else(|| panic!("{grant:?}: no such page"));
        assert_eq!(site.name, grant.site);
        assert!(
            key.covers(&site.name, &page.id),
            "{grant:?} with key {:?}",
            key.name
        );
        assert_eq!(
            check_email("email", &grant.email).ok().as_ref(),
            Some(&grant.email)
        );
        if let Some(name) = &grant.name {
            assert_eq!(check_name(name).ok().as_ref(), Some(name));
        }
        if let Some(end) = grant.access_until {
            assert!(end > now, "{grant:?} ends in the past");
            let last = (now + i64::from(MAX_DAYS) * 86_400).max(253_402_300_800);
            assert!(end <= last, "{grant:?} ends too late");
        }
        if let Some(order) = &grant.order_id {
            assert_eq!(order.trim(), order);
            let chars = order.chars().count();
            assert!(
                (1..=MAX_ORDER_ID_CHARS).contains(&chars) && !order.chars().any(char::is_control)
            );
        }
    }

    if let Ok(add) = admin_client_input(input.page.to_owned(), &body) {
        assert_eq!(add.page, input.page);
        let _ = check_email("email", &add.email);
        let _ = add.name.as_deref().map(check_name);
        if let Ok(Some(end)) = access_end(add.until.as_deref(), add.days, now) {
            assert!(end > now);
        }
    }
    if let Ok(change) = admin_client_change(&body) {
        let _ = change.email.as_deref().map(|e| check_email("email", e));
        let _ = change.name.as_deref().map(check_name);
        if change.until.is_some() || change.days.is_some() {
            if let Ok(Some(end)) = access_end(change.until.as_deref(), change.days, now) {
                assert!(end > now);
            }
        }
    }
    if let Ok(mut object) = Object::parse(&body, FIELDS) {
        let _ = object.take::<u32>("days", "a number");
        let _ = object.take::<Vec<String>>("page", "a list");
        let _ = object.bool("notify");
        let _ = object.required_string("email");
    }

    if let Ok((_, limit)) = admin_audit_query(input.query) {
        assert!((1..=1000).contains(&limit), "{:?}: {limit}", input.query);
    }
    if let Ok(query) = ClientQuery::from_query(input.query) {
        assert!(
            (1..=1000).contains(&query.limit),
            "{:?}: {query:?}",
            input.query
        );
        assert_eq!(query.q.trim(), query.q);
    }
});
