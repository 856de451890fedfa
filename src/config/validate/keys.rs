//! `[[api_key]]`: the keys of the grant endpoint and the admin API, checked against the sites
//! and pages they name.

use std::collections::HashSet;

use super::{Ctx, Result};
use crate::config::file::FileConfig;
use crate::config::{ApiKeyConfig, Config, Scope};

impl Config {
    pub(super) fn with_api_keys(mut self, ctx: &Ctx<'_>, file: &FileConfig) -> Result<Config> {
        let mut names = HashSet::new();
        for (i, raw) in file.api_key.iter().enumerate() {
            let k = raw.get_ref();
            let key = |name: &str| format!("api_key[{i}].{name}");
            let name = match &k.name {
                Some(n) if !n.get_ref().trim().is_empty() => n.get_ref().trim().to_owned(),
                _ => {
                    return Err(ctx.invalid(
                        &key("name"),
                        Some(raw.span()),
                        "expected a name for the key",
                    ));
                }
            };
            if !names.insert(name.clone()) {
                return Err(ctx.invalid(
                    &key("name"),
                    k.name.as_ref().map(|n| n.span()),
                    format!("the key name {name:?} is used twice"),
                ));
            }
            let secret = ctx
                .secret(
                    &key("secret"),
                    k.secret.as_ref(),
                    k.secret_file.as_ref(),
                    k.secret_env.as_ref(),
                )?
                .ok_or_else(|| {
                    ctx.invalid(
                        &key("secret"),
                        Some(raw.span()),
                        "expected `secret`, `secret_file` or `secret_env`",
                    )
                })?;
            if secret.0.len() < 24 {
                return Err(ctx.invalid(
                    &key("secret"),
                    Some(raw.span()),
                    "expected at least 24 characters of random text",
                ));
            }
            let Some(scopes_raw) = &k.scopes else {
                return Err(ctx.invalid(
                    &key("scopes"),
                    Some(raw.span()),
                    "expected scopes = [\"grant\"] and/or [\"admin\"]",
                ));
            };
            let mut scopes = Vec::new();
            for (j, s) in scopes_raw.get_ref().iter().enumerate() {
                scopes.push(match s.get_ref().as_str() {
                    "grant" => Scope::Grant,
                    "admin" => Scope::Admin,
                    other => {
                        return Err(ctx.invalid(
                            &key(&format!("scopes[{j}]")),
                            Some(s.span()),
                            format!("expected \"grant\" or \"admin\", got {other:?}"),
                        ));
                    }
                });
            }
            if scopes.is_empty() {
                return Err(ctx.invalid(
                    &key("scopes"),
                    Some(scopes_raw.span()),
                    "expected at least one scope",
                ));
            }
            let sites = match &k.sites {
                None => None,
                Some(list) => {
                    let mut out = Vec::new();
                    for (j, s) in list.iter().enumerate() {
                        if !self.sites.iter().any(|site| site.name == *s.get_ref()) {
                            return Err(ctx.invalid(
                                &key(&format!("sites[{j}]")),
                                Some(s.span()),
                                format!("no site is named {:?}", s.get_ref()),
                            ));
                        }
                        out.push(s.get_ref().clone());
                    }
                    Some(out)
                }
            };
            let pages = match &k.pages {
                None => None,
                Some(list) => {
                    let mut out = Vec::new();
                    for (j, p) in list.iter().enumerate() {
                        if !self
                            .sites
                            .iter()
                            .any(|site| site.page(p.get_ref()).is_some())
                        {
                            return Err(ctx.invalid(
                                &key(&format!("pages[{j}]")),
                                Some(p.span()),
                                format!("no page has the id {:?}", p.get_ref()),
                            ));
                        }
                        out.push(p.get_ref().clone());
                    }
                    Some(out)
                }
            };
            self.api_keys.push(ApiKeyConfig {
                name,
                secret,
                scopes,
                sites,
                pages,
            });
        }
        Ok(self)
    }
}
