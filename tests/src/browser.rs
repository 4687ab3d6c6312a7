//! A cookie-keeping HTTP client for the facade's plain-HTTP routes, by hand so that tests see
//! every `Set-Cookie` exactly as sent.

use crate::Facade;

/// A cookie-keeping HTTP client for the facade's plain-HTTP routes, by hand so that tests
/// see every `Set-Cookie` exactly as sent.
pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
    /// Cookies as the browser would send them back: name -> value.
    pub cookies: std::collections::BTreeMap<String, String>,
    /// Every `Set-Cookie` of the last response.
    pub set_cookies: Vec<String>,
}

impl Browser {
    pub fn new(facade: &Facade) -> Self {
        Browser {
            http: reqwest::Client::new(),
            base: format!("http://{}", facade.addr),
            cookies: Default::default(),
            set_cookies: Vec::new(),
        }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("; ")
    }

    /// The `Set-Cookie` of the last response for `name`, if any.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies.iter().map(String::as_str).find(|line| line.starts_with(&format!("{name}=")))
    }

    pub fn csrf(&self) -> String {
        self.cookies.get("csrftoken").cloned().unwrap_or_default()
    }

    /// Sends `request` with the jar's cookies; keeps what comes back.
    pub async fn send(
        &mut self,
        request: reqwest::RequestBuilder,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let (status, headers, body) = self.send_text(request).await;
        (status, headers, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
    }

    /// `send`, the body as text (a page).
    pub async fn send_text(&mut self, request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
        let request = if self.cookies.is_empty() { request } else { request.header("cookie", self.cookie_header()) };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        self.set_cookies =
            headers.get_all("set-cookie").iter().map(|value| value.to_str().unwrap().to_owned()).collect();
        for line in &self.set_cookies {
            let pair = line.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            let removal = line.to_ascii_lowercase().contains("max-age=0");
            if removal || value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        (status, headers, response.text().await.unwrap_or_default())
    }

    pub async fn get(&mut self, path: &str) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// POSTs JSON with `X-CSRFToken` from the cookie jar (when `csrf`).
    pub async fn post(
        &mut self,
        path: &str,
        body: serde_json::Value,
        csrf: bool,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if csrf {
            request = request.header("x-csrftoken", self.csrf());
        }
        self.send(request).await
    }

    /// GET /api/csrf, then POST /api/login.
    pub async fn log_in(&mut self, username: &str, password: &str) -> serde_json::Value {
        let (status, _, _) = self.get("/api/csrf").await;
        assert_eq!(status, 200);
        let (status, _, body) =
            self.post("/api/login", serde_json::json!({"username": username, "password": password}), true).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// A GraphQL request riding on the cookies (with the CSRF header when `csrf`).
    pub async fn graphql(&mut self, query: &str, csrf: bool) -> (u16, serde_json::Value) {
        let (status, _, body) = self.post("/graphql", serde_json::json!({ "query": query }), csrf).await;
        (status, body)
    }
}
