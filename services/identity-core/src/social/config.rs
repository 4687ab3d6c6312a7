//! The providers file (`IDENTITY_PROVIDERS_FILE`, TOML): which providers users may sign in
//! with. Nothing is compiled in; a provider is an OpenID Connect issuer (found by discovery)
//! or GitHub (OAuth2 and its REST API, whose endpoints may point at GitHub Enterprise).

use std::path::Path;

use serde::Deserialize;

use crate::{
    error::{CoreError, CoreResult},
    settings::Secret,
};

/// What kind of provider, and so which protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenID Connect: discovery, JWKS, a signed ID token.
    Oidc,
    /// GitHub: OAuth2, then `GET /user` and `GET /user/emails` (verified addresses only).
    Github,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Oidc => "oidc",
            ProviderKind::Github => "github",
        }
    }
}

/// One provider as configured.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// The `{provider}` of every route: lower-case letters, digits, `-` and `_`.
    pub name: String,
    pub kind: ProviderKind,
    /// What a "Sign in with …" button says.
    pub display_name: String,
    /// OpenID Connect: the issuer, exactly as the provider's discovery document names it.
    pub issuer: Option<String>,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    /// Redirect URIs a single-page app may use besides `{public_url}/auth/{name}/callback`
    /// (each must also be registered at the provider).
    pub redirect_uris: Vec<String>,
    /// GitHub: the authorization, token and API endpoints.
    pub authorize_url: String,
    pub token_url: String,
    pub api_url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    provider: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    kind: ProviderKind,
    display_name: Option<String>,
    issuer: Option<String>,
    client_id: String,
    client_secret: Option<String>,
    client_secret_file: Option<String>,
    scopes: Option<Vec<String>>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    authorize_url: Option<String>,
    token_url: Option<String>,
    api_url: Option<String>,
}

/// Reads and checks the providers file; a relative `client_secret_file` is read from the
/// file's directory. Every problem is reported at once, naming the provider.
pub fn load_providers(path: &Path) -> CoreResult<Vec<ProviderSettings>> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| CoreError::invalid("providers_file", format!("cannot read {}: {error}", path.display())))?;
    parse_providers(&text, path.parent().unwrap_or(Path::new(".")))
}

/// Parses the providers file's text (`base` resolves relative secret files).
pub fn parse_providers(text: &str, base: &Path) -> CoreResult<Vec<ProviderSettings>> {
    let file: File = toml::from_str(text).map_err(|error| CoreError::invalid("providers_file", error.to_string()))?;
    let mut providers: Vec<ProviderSettings> = Vec::new();
    let mut problems = Vec::new();
    for entry in file.provider {
        let name = entry.name.clone();
        match provider(entry, base) {
            Ok(provider) if providers.iter().any(|known| known.name == provider.name) => {
                problems.push(format!("provider \"{name}\": named twice"));
            }
            Ok(provider) => providers.push(provider),
            Err(problem) => problems.push(format!("provider \"{name}\": {problem}")),
        }
    }
    if !problems.is_empty() {
        return Err(CoreError::invalid("providers_file", problems.join("; ")));
    }
    Ok(providers)
}

fn provider(entry: Entry, base: &Path) -> Result<ProviderSettings, String> {
    check_name(&entry.name)?;
    if entry.client_id.trim().is_empty() {
        return Err("client_id must not be empty".into());
    }
    let client_secret = match (entry.client_secret, entry.client_secret_file) {
        (Some(secret), None) => secret,
        (None, Some(file)) => {
            let path = base.join(file);
            let secret =
                std::fs::read_to_string(&path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            secret.trim().to_owned()
        }
        (Some(_), Some(_)) => return Err("set client_secret or client_secret_file, not both".into()),
        (None, None) => return Err("client_secret or client_secret_file is required".into()),
    };
    if client_secret.is_empty() {
        return Err("the client secret is empty".into());
    }
    for uri in &entry.redirect_uris {
        check_url("redirect_uris", uri)?;
    }
    let (issuer, scopes, authorize_url, token_url, api_url) = match entry.kind {
        ProviderKind::Oidc => {
            let issuer = entry.issuer.ok_or("issuer is required for kind = \"oidc\"")?;
            check_url("issuer", &issuer)?;
            if entry.authorize_url.is_some() || entry.token_url.is_some() || entry.api_url.is_some() {
                return Err("an OpenID provider's endpoints come from its discovery document: set issuer only".into());
            }
            let mut scopes = entry.scopes.unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
            if !scopes.iter().any(|scope| scope == "openid") {
                scopes.insert(0, "openid".into());
            }
            (Some(issuer), scopes, String::new(), String::new(), String::new())
        }
        ProviderKind::Github => {
            if entry.issuer.is_some() {
                return Err(
                    "GitHub has no issuer: set authorize_url, token_url and api_url for GitHub Enterprise".into()
                );
            }
            let authorize_url =
                entry.authorize_url.unwrap_or_else(|| "https://github.com/login/oauth/authorize".into());
            let token_url = entry.token_url.unwrap_or_else(|| "https://github.com/login/oauth/access_token".into());
            let api_url = entry.api_url.unwrap_or_else(|| "https://api.github.com".into());
            for (field, url) in [("authorize_url", &authorize_url), ("token_url", &token_url), ("api_url", &api_url)] {
                check_url(field, url)?;
            }
            let scopes = entry.scopes.unwrap_or_else(|| vec!["read:user".into(), "user:email".into()]);
            (None, scopes, authorize_url, token_url, api_url.trim_end_matches('/').to_owned())
        }
    };
    if scopes.iter().any(|scope| scope.is_empty() || scope.contains(char::is_whitespace)) {
        return Err("scopes must be single words".into());
    }
    Ok(ProviderSettings {
        display_name: entry.display_name.unwrap_or_else(|| title(&entry.name)),
        name: entry.name,
        kind: entry.kind,
        issuer,
        client_id: entry.client_id,
        client_secret: Secret::new(client_secret),
        scopes,
        redirect_uris: entry.redirect_uris,
        authorize_url,
        token_url,
        api_url,
    })
}

/// Names appear in paths: 1 to 32 of `a-z0-9-_`.
fn check_name(name: &str) -> Result<(), String> {
    let good = !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_');
    if good { Ok(()) } else { Err("name must be 1 to 32 of a-z, 0-9, - and _".into()) }
}

fn check_url(field: &str, value: &str) -> Result<(), String> {
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "https" | "http") && url.host().is_some() => Ok(()),
        _ => Err(format!("{field}: {value:?} is not an http(s) URL")),
    }
}

fn title(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issues_shape_parses_with_defaults() {
        let text = r#"
            [[provider]]
            name = "example"
            kind = "oidc"
            issuer = "https://accounts.example.com"
            client_id = "id"
            client_secret = "secret"
            scopes = ["email", "profile"]

            [[provider]]
            name = "github"
            kind = "github"
            client_id = "gh"
            client_secret = "s"
        "#;
        let providers = parse_providers(text, Path::new(".")).unwrap();
        assert_eq!(providers[0].scopes, ["openid", "email", "profile"]);
        assert_eq!(providers[0].display_name, "Example");
        assert_eq!(providers[1].api_url, "https://api.github.com");
        assert_eq!(providers[1].scopes, ["read:user", "user:email"]);
    }

    #[test]
    fn every_problem_is_named() {
        let text = r#"
            [[provider]]
            name = "Bad Name"
            kind = "oidc"
            issuer = "https://x.example"
            client_id = "id"
            client_secret = "s"

            [[provider]]
            name = "nosecret"
            kind = "oidc"
            issuer = "https://x.example"
            client_id = "id"

            [[provider]]
            name = "noissuer"
            kind = "oidc"
            client_id = "id"
            client_secret = "s"
        "#;
        let error = parse_providers(text, Path::new(".")).unwrap_err().to_string();
        assert!(error.contains("\"Bad Name\": name must be"), "{error}");
        assert!(error.contains("\"nosecret\": client_secret or client_secret_file is required"), "{error}");
        assert!(error.contains("\"noissuer\": issuer is required"), "{error}");
        let unknown = "[[provider]]\nname = \"x\"\nkind = \"saml\"\nclient_id = \"a\"\nclient_secret = \"b\"\n";
        assert!(parse_providers(unknown, Path::new(".")).is_err());
    }
}
