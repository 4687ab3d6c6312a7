//! The GraphQL schema (one module per noun) and its limits. `http` serves it.

pub mod auth;
pub mod http;
pub mod sessions;
pub mod subscriptions;
pub mod types;
pub mod users;
pub mod websocket;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_graphql::{
    MergedObject, Response, Schema, ServerError, ServerResult, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery},
    parser::types::{ExecutableDocument, Selection, SelectionSet},
};

#[derive(MergedObject, Default)]
pub struct Query(auth::AuthQuery, users::UsersQuery, sessions::SessionsQuery);

#[derive(MergedObject, Default)]
pub struct Mutation(auth::AuthMutation, users::UsersMutation, sessions::SessionsMutation);

pub type AppSchema = Schema<Query, Mutation, subscriptions::Subscription>;

/// Bounds on what one query may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub depth: usize,
    pub complexity: usize,
    pub aliases: usize,
}

pub fn schema(limits: Limits) -> AppSchema {
    Schema::build(Query::default(), Mutation::default(), subscriptions::Subscription)
        .limit_depth(limits.depth)
        .limit_complexity(limits.complexity)
        .limit_recursive_depth(32)
        .limit_directives(8)
        .extension(RequestGuard { max_aliases: limits.aliases })
        .finish()
}

/// Set when a request got past parsing and validation into execution; the HTTP layer needs
/// it to tell request errors (no `data` entry, 400 for `application/graphql-response+json`)
/// from field errors.
#[derive(Clone, Default, Debug)]
pub struct Executed(Arc<AtomicBool>);

impl Executed {
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bounds aliases (async-graphql bounds depth and complexity itself) and marks execution.
struct RequestGuard {
    max_aliases: usize,
}

impl ExtensionFactory for RequestGuard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestGuard { max_aliases: self.max_aliases })
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
        let document = next.run(ctx, query, variables).await?;
        let aliases = count_aliases(&document);
        if aliases > self.max_aliases {
            return Err(ServerError::new(format!("too many aliases: {aliases} (at most {})", self.max_aliases), None));
        }
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        if let Some(executed) = ctx.data_opt::<Executed>() {
            executed.0.store(true, Ordering::Relaxed);
        }
        next.run(ctx, operation_name).await
    }
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
    fn the_schema_has_no_password_field() {
        let sdl = schema(Limits { depth: 10, complexity: 100, aliases: 10 }).sdl();
        assert!(!sdl.to_lowercase().contains("passwordhash") && !sdl.contains("password_hash"));
        for operation in ["tokenAuth", "verifyToken", "refreshToken", "revokeToken", "createUser", "whoami", "users"] {
            assert!(sdl.contains(operation), "{operation} missing");
        }
    }
}
