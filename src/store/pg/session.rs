//! A connection as the store's statements see it: the same calls as the driver's client or
//! transaction, with each statement prepared once per connection and reused, so a statement
//! costs one round trip to the server instead of two (prepare, then execute).
//!
//! It owns only the statement cache; it must never hold a statement across connections (the
//! cache lives and dies with its connection).

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Row, Statement, Transaction};

/// Statements kept per connection; the cache is emptied when full (the store's statements
/// are a fixed set, plus a few shapes of optional filters).
const MAX_STATEMENTS: usize = 512;

/// Prepared statements of one connection, by SQL text.
#[derive(Default)]
pub(super) struct Statements(HashMap<String, Statement>);

enum Target<'s, 't> {
    Client(&'s mut postgres::Client),
    Tx(&'s mut Transaction<'t>),
}

/// A connection or a transaction on it, with its connection's statement cache.
pub(super) struct Session<'s, 't> {
    target: Target<'s, 't>,
    statements: &'s mut Statements,
}

impl<'s, 't> Session<'s, 't> {
    pub(super) fn client(client: &'s mut postgres::Client, statements: &'s mut Statements) -> Self {
        Self {
            target: Target::Client(client),
            statements,
        }
    }

    pub(super) fn tx(tx: &'s mut Transaction<'t>, statements: &'s mut Statements) -> Self {
        Self {
            target: Target::Tx(tx),
            statements,
        }
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.0.get(sql) {
            return Ok(s.clone());
        }
        let s = match &mut self.target {
            Target::Client(c) => c.prepare(sql)?,
            Target::Tx(t) => t.prepare(sql)?,
        };
        if self.statements.0.len() >= MAX_STATEMENTS {
            self.statements.0.clear();
        }
        self.statements.0.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    pub(super) fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let st = self.statement(sql)?;
        match &mut self.target {
            Target::Client(c) => c.query(&st, params),
            Target::Tx(t) => t.query(&st, params),
        }
    }

    pub(super) fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error> {
        let st = self.statement(sql)?;
        match &mut self.target {
            Target::Client(c) => c.query_one(&st, params),
            Target::Tx(t) => t.query_one(&st, params),
        }
    }

    pub(super) fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let st = self.statement(sql)?;
        match &mut self.target {
            Target::Client(c) => c.query_opt(&st, params),
            Target::Tx(t) => t.query_opt(&st, params),
        }
    }

    pub(super) fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let st = self.statement(sql)?;
        match &mut self.target {
            Target::Client(c) => c.execute(&st, params),
            Target::Tx(t) => t.execute(&st, params),
        }
    }
}
