//! The GraphQL schema (one module per noun) and its limits. `graphql_http` and `graphql_ws`
//! serve it.

pub mod accounts;
pub mod auth;
pub mod sessions;
pub mod social;
pub mod subscriptions;
pub mod types;
pub mod users;

use std::sync::{Arc, Mutex};

use async_graphql::{
    MergedObject, Response, Schema, ServerError, ServerResult, ValidationResult, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextValidation},
    parser::types::{DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet},
};

#[derive(MergedObject, Default)]
pub struct Query(auth::AuthQuery, users::UsersQuery, sessions::SessionsQuery, social::SocialQuery);

#[derive(MergedObject, Default)]
pub struct Mutation(
    auth::AuthMutation,
    users::UsersMutation,
    sessions::SessionsMutation,
    accounts::AccountsMutation,
    social::SocialMutation,
);

pub type AppSchema = Schema<Query, Mutation, subscriptions::Subscription>;

/// Bounds on what one query may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub depth: usize,
    pub complexity: usize,
    pub aliases: usize,
}

/// The schema, and the documents it parsed and validated (shared with it), which the HTTP
/// layer asks what a request would run before executing it.
pub fn schema(limits: Limits) -> (AppSchema, Documents) {
    let documents = Documents::new();
    (schema_with(limits, documents.0.clone()), documents)
}

/// Documents by query text, as the schema parsed and validated them.
#[derive(Clone)]
pub struct Documents(ParseCache);

impl Documents {
    pub fn new() -> Self {
        Documents(parse_cache())
    }

    /// The type of the operation a request would run, if it can be told: from the document
    /// the schema already parsed for this query text (most requests), else by parsing it.
    pub fn operation_type(&self, query: &str, operation_name: Option<&str>) -> Option<OperationType> {
        match self.0.get(query) {
            Some(parsed) => operation_type_of(&parsed.document, operation_name),
            None => operation_type_of(&async_graphql::parser::parse_query(query).ok()?, operation_name),
        }
    }
}

#[cfg(test)]
impl Documents {
    pub fn holds(&self, query: &str) -> bool {
        self.0.contains_key(query)
    }
}

impl Default for Documents {
    fn default() -> Self {
        Self::new()
    }
}

fn operation_type_of(document: &ExecutableDocument, operation_name: Option<&str>) -> Option<OperationType> {
    match &document.operations {
        DocumentOperations::Single(operation) => Some(operation.node.ty),
        DocumentOperations::Multiple(operations) => match operation_name {
            Some(name) => operations.get(name).map(|operation| operation.node.ty),
            None if operations.len() == 1 => operations.values().next().map(|operation| operation.node.ty),
            None => None,
        },
    }
}

fn parse_cache() -> ParseCache {
    moka::sync::Cache::builder()
        .weigher(|query: &String, _| u32::try_from(entry_weight(query.len())).unwrap_or(u32::MAX))
        .max_capacity(PARSE_CACHE_BYTES)
        .build()
}

fn schema_with(limits: Limits, parsed: ParseCache) -> AppSchema {
    Schema::build(Query::default(), Mutation::default(), subscriptions::Subscription)
        .limit_depth(limits.depth)
        .limit_complexity(limits.complexity)
        .limit_recursive_depth(32)
        .limit_directives(8)
        .extension(GuardFactory { max_aliases: limits.aliases, parsed })
        .finish()
}

/// What the parse cache may hold, in (estimated) bytes; longer queries are not cached.
const PARSE_CACHE_BYTES: u64 = 16 * 1024 * 1024;
const PARSE_CACHE_MAX_QUERY: usize = 8 * 1024;

/// An entry's estimated size: the text, its parsed form (a few times larger), and a fixed
/// overhead, so that a flood of tiny distinct queries fills the cache with few entries.
fn entry_weight(query_len: usize) -> usize {
    1024 + 5 * query_len
}

/// A parsed (and alias-checked) document and its operations' labels.
struct Parsed {
    document: ExecutableDocument,
    operations: Vec<(Option<String>, String)>,
}

/// Parsed documents by query text, shared by every request: clients send the same few
/// queries again and again, and parsing was a good part of a request's CPU.
type ParseCache = moka::sync::Cache<String, Arc<Parsed>>;

/// The label of a request that never ran (refused, or invalid GraphQL).
pub const NOT_RUN: &str = "(not run)";

/// Set when a request got past parsing and validation into execution, to the root field it
/// selected: the HTTP layer needs the first to tell request errors (no `data` entry, 400 for
/// `application/graphql-response+json`) from field errors, and metrics count the second.
#[derive(Clone, Default, Debug)]
pub struct Executed(Arc<Mutex<Option<String>>>);

impl Executed {
    /// The operation's label once it ran: its one root field, or `(multiple)`.
    pub fn operation(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

struct GuardFactory {
    max_aliases: usize,
    parsed: ParseCache,
}

/// Parses through the cache, bounds aliases (async-graphql bounds depth and complexity
/// itself) and marks execution. One instance per request.
struct RequestGuard {
    max_aliases: usize,
    parsed: ParseCache,
    /// Each operation of the document by name, with its label.
    operations: Mutex<Vec<(Option<String>, String)>>,
    /// A freshly parsed document, cached only once it has passed validation (a flood of
    /// invalid queries must not fill the cache).
    pending: Mutex<Option<(String, Arc<Parsed>)>>,
}

impl ExtensionFactory for GuardFactory {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestGuard {
            max_aliases: self.max_aliases,
            parsed: self.parsed.clone(),
            operations: Mutex::default(),
            pending: Mutex::default(),
        })
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for RequestGuard {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if let Some(parsed) = self.parsed.get(query) {
            *self.operations.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = parsed.operations.clone();
            return Ok(parsed.document.clone());
        }
        let document = next.run(ctx, query, variables).await?;
        let aliases = count_aliases(&document);
        if aliases > self.max_aliases {
            return Err(ServerError::new(format!("too many aliases: {aliases} (at most {})", self.max_aliases), None));
        }
        let operations = operation_labels(&document);
        if query.len() <= PARSE_CACHE_MAX_QUERY {
            let parsed = Parsed { document: document.clone(), operations: operations.clone() };
            *self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                Some((query.to_owned(), Arc::new(parsed)));
        }
        *self.operations.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = operations;
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await;
        let pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let (Ok(_), Some((query, parsed))) = (&result, pending) {
            self.parsed.insert(query, parsed);
        }
        result
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        if let Some(executed) = ctx.data_opt::<Executed>() {
            // Validation passed, so the root fields are fields of the schema: a closed set.
            let operations = self.operations.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let label = match operation_name {
                Some(name) => operations.iter().find(|(op, _)| op.as_deref() == Some(name)),
                None => operations.first(),
            }
            .map(|(_, label)| label.clone())
            .unwrap_or_else(|| "(multiple)".to_owned());
            *executed.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(label);
        }
        next.run(ctx, operation_name).await
    }
}

/// Each operation's name and label: the one root field it selects, or `(multiple)`.
fn operation_labels(document: &ExecutableDocument) -> Vec<(Option<String>, String)> {
    fn root_fields<'a>(set: &'a SelectionSet, document: &'a ExecutableDocument, out: &mut Vec<&'a str>) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => out.push(field.node.name.node.as_str()),
                Selection::InlineFragment(fragment) => root_fields(&fragment.node.selection_set.node, document, out),
                Selection::FragmentSpread(spread) => {
                    if let Some(fragment) = document.fragments.get(&spread.node.fragment_name.node) {
                        root_fields(&fragment.node.selection_set.node, document, out);
                    }
                }
            }
        }
    }
    document
        .operations
        .iter()
        .map(|(name, operation)| {
            let mut fields = Vec::new();
            root_fields(&operation.node.selection_set.node, document, &mut fields);
            fields.sort_unstable();
            fields.dedup();
            let label = match fields.as_slice() {
                [one] => (*one).to_owned(),
                _ => "(multiple)".to_owned(),
            };
            (name.map(|name| name.to_string()), label)
        })
        .collect()
}

fn count_aliases(document: &ExecutableDocument) -> usize {
    fn in_set(set: &SelectionSet) -> usize {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(field) => {
                    usize::from(field.node.alias.is_some()) + in_set(&field.node.selection_set.node)
                }
                Selection::InlineFragment(fragment) => in_set(&fragment.node.selection_set.node),
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    let operations: usize = document.operations.iter().map(|(_, op)| in_set(&op.node.selection_set.node)).sum();
    let fragments: usize = document.fragments.values().map(|f| in_set(&f.node.selection_set.node)).sum();
    operations + fragments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_counted_in_operations_and_fragments() {
        let document = async_graphql::parser::parse_query(
            "{ a: whoami { id } b: whoami { x: id } ...F } fragment F on Query { c: whoami { id } }",
        )
        .unwrap();
        assert_eq!(count_aliases(&document), 4);
    }

    #[test]
    fn operations_are_labelled_by_their_one_root_field() {
        let document = async_graphql::parser::parse_query(
            "query A { whoami { id } w: whoami { id } } query B { whoami { id } sessions { id } } \
             query C { ...F } fragment F on Query { users { id } }",
        )
        .unwrap();
        let labels = operation_labels(&document);
        let label = |name: &str| labels.iter().find(|(op, _)| op.as_deref() == Some(name)).map(|(_, l)| l.as_str());
        assert_eq!(label("A"), Some("whoami"));
        assert_eq!(label("B"), Some("(multiple)"));
        assert_eq!(label("C"), Some("users"));
    }

    #[tokio::test]
    async fn cached_documents_answer_like_fresh_ones_and_refusals_are_not_cached() {
        let (schema, _) = schema(Limits { depth: 10, complexity: 100, aliases: 2 });
        for _ in 0..2 {
            let response = schema.execute("query Q { __typename }").await;
            assert!(response.errors.is_empty(), "{:?}", response.errors);
            assert_eq!(response.data.to_string(), "{__typename: \"Query\"}");
            let response = schema.execute("{ a: __typename b: __typename c: __typename }").await;
            assert!(response.errors[0].message.contains("too many aliases"), "{:?}", response.errors);
            let response = schema.execute("{ noSuchField }").await;
            assert!(!response.errors.is_empty());
        }
    }

    #[tokio::test]
    async fn only_documents_that_pass_validation_are_cached() {
        let cache = parse_cache();
        let schema = schema_with(Limits { depth: 10, complexity: 100, aliases: 2 }, cache.clone());
        schema.execute("query Q { __typename }").await;
        schema.execute("{ noSuchField }").await;
        cache.run_pending_tasks();
        assert!(cache.contains_key("query Q { __typename }"));
        assert!(!cache.contains_key("{ noSuchField }"));
    }

    #[test]
    fn the_schema_has_no_password_field() {
        let sdl = schema(Limits { depth: 10, complexity: 100, aliases: 10 }).0.sdl();
        assert!(!sdl.to_lowercase().contains("passwordhash") && !sdl.contains("password_hash"));
        for operation in ["tokenAuth", "verifyToken", "refreshToken", "revokeToken", "createUser", "whoami", "users"] {
            assert!(sdl.contains(operation), "{operation} missing");
        }
    }

    #[test]
    fn the_account_mutations_have_django_graphql_auths_signatures() {
        let sdl = schema(Limits { depth: 10, complexity: 100, aliases: 10 }).0.sdl();
        for signature in [
            "register(email: String!, username: String!, password1: String!, password2: String!): Register!",
            "verifyAccount(token: String!): VerifyAccount!",
            "resendActivationEmail(email: String!): ResendActivationEmail!",
            "sendPasswordResetEmail(email: String!): SendPasswordResetEmail!",
            "passwordReset(token: String!, newPassword1: String!, newPassword2: String!): PasswordReset!",
            "passwordChange(oldPassword: String!, newPassword1: String!, newPassword2: String!): PasswordChange!",
            "requestEmailChange(newEmail: String!, password: String!): RequestEmailChange!",
            "confirmEmailChange(token: String!): ConfirmEmailChange!",
            "errors: ExpectedErrorType",
            "verified: Boolean!",
        ] {
            assert!(sdl.contains(signature), "{signature} missing from\n{sdl}");
        }
    }
}
