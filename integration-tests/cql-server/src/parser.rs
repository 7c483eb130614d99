//! A recursive-descent parser for the CQL subset pinhive uses (see README.md for the grammar).

use crate::error::CqlError;
use crate::lexer::{tokenize, Token};

/// A literal or a bind marker. Bind markers are numbered in the order they appear.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    Bind(usize),
    Str(String),
    Number(String),
    Hex(Vec<u8>),
    Uuid(String),
    Boolean(bool),
    Null,
    List(Vec<Term>),
    Map(Vec<(Term, Term)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
    NotEq,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Relation {
    /// `col op term`
    Single {
        column: String,
        operator: Operator,
        term: Term,
    },
    /// `col IN (t, ...)` or `col IN ?`
    In { column: String, terms: InTerms },
    /// `(c1, c2) op (t1, t2)`
    Tuple {
        columns: Vec<String>,
        operator: Operator,
        terms: Vec<Term>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum InTerms {
    List(Vec<Term>),
    Bind(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableName {
    pub keyspace: Option<String>,
    pub table: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    None,
    IfNotExists,
    IfExists,
    Columns(Vec<(String, Term)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDefinition {
    pub name: String,
    pub type_name: String,
    pub is_static: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    All,
    Count,
    Columns(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    CreateKeyspace {
        name: String,
        if_not_exists: bool,
        replication: Vec<(String, String)>,
        durable_writes: bool,
    },
    CreateTable {
        name: TableName,
        if_not_exists: bool,
        columns: Vec<ColumnDefinition>,
        partition_key: Vec<String>,
        clustering_key: Vec<String>,
        clustering_order: Vec<(String, bool)>,
        default_time_to_live: i32,
    },
    DropTable {
        name: TableName,
        if_exists: bool,
    },
    DropKeyspace {
        name: String,
        if_exists: bool,
    },
    Truncate {
        name: TableName,
    },
    Use {
        keyspace: String,
    },
    Insert {
        table: TableName,
        columns: Vec<String>,
        values: Vec<Term>,
        if_not_exists: bool,
        ttl: Option<Term>,
        timestamp: Option<Term>,
    },
    Update {
        table: TableName,
        ttl: Option<Term>,
        timestamp: Option<Term>,
        assignments: Vec<(String, Term)>,
        relations: Vec<Relation>,
        condition: Condition,
    },
    Delete {
        table: TableName,
        timestamp: Option<Term>,
        columns: Vec<String>,
        relations: Vec<Relation>,
        condition: Condition,
    },
    Select {
        table: TableName,
        selection: Selection,
        relations: Vec<Relation>,
        order_by: Vec<(String, bool)>,
        limit: Option<Term>,
        allow_filtering: bool,
    },
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
    bind_count: usize,
}

/// Parses one statement; returns it with the number of bind markers it holds.
pub fn parse(text: &str) -> Result<(Statement, usize), CqlError> {
    let mut parser = Parser {
        tokens: tokenize(text)?,
        position: 0,
        bind_count: 0,
    };
    let statement = parser.statement()?;
    parser.eat_symbol(";");
    if let Some(extra) = parser.peek() {
        return Err(CqlError::syntax(format!(
            "line 1: extraneous input {extra:?} at the end of the statement"
        )));
    }
    Ok((statement, parser.bind_count))
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Result<Token, CqlError> {
        let token = self
            .tokens
            .get(self.position)
            .cloned()
            .ok_or_else(|| CqlError::syntax("line 1: unexpected end of statement"))?;
        self.position += 1;
        Ok(token)
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Identifier(word)) if word == keyword)
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        if self.peek_keyword(keyword) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), CqlError> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            Err(CqlError::syntax(format!(
                "line 1: expected {}, found {:?}",
                keyword.to_uppercase(),
                self.peek()
            )))
        }
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        if matches!(self.peek(), Some(Token::Symbol(found)) if *found == symbol) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<(), CqlError> {
        if self.eat_symbol(symbol) {
            Ok(())
        } else {
            Err(CqlError::syntax(format!(
                "line 1: expected '{symbol}', found {:?}",
                self.peek()
            )))
        }
    }

    fn identifier(&mut self) -> Result<String, CqlError> {
        match self.next()? {
            Token::Identifier(word) | Token::QuotedIdentifier(word) => Ok(word),
            other => Err(CqlError::syntax(format!(
                "line 1: expected an identifier, found {other:?}"
            ))),
        }
    }

    fn table_name(&mut self) -> Result<TableName, CqlError> {
        let first = self.identifier()?;
        if self.eat_symbol(".") {
            let table = self.identifier()?;
            Ok(TableName {
                keyspace: Some(first),
                table,
            })
        } else {
            Ok(TableName {
                keyspace: None,
                table: first,
            })
        }
    }

    fn statement(&mut self) -> Result<Statement, CqlError> {
        let keyword = match self.next()? {
            Token::Identifier(word) => word,
            other => {
                return Err(CqlError::syntax(format!(
                    "line 1: no viable alternative at input {other:?}"
                )))
            }
        };
        match keyword.as_str() {
            "create" => {
                if self.eat_keyword("keyspace") {
                    self.create_keyspace()
                } else if self.eat_keyword("table") || self.eat_keyword("columnfamily") {
                    self.create_table()
                } else if self.eat_keyword("index") || self.eat_keyword("materialized") {
                    Err(CqlError::invalid(
                        "Secondary indexes and materialized views are not supported (pinhive's schema uses none)",
                    ))
                } else {
                    Err(CqlError::syntax("line 1: expected KEYSPACE or TABLE after CREATE"))
                }
            }
            "drop" => {
                if self.eat_keyword("keyspace") {
                    let if_exists = self.if_exists()?;
                    let name = self.identifier()?;
                    Ok(Statement::DropKeyspace { name, if_exists })
                } else if self.eat_keyword("table") {
                    let if_exists = self.if_exists()?;
                    let name = self.table_name()?;
                    Ok(Statement::DropTable { name, if_exists })
                } else {
                    Err(CqlError::syntax("line 1: expected KEYSPACE or TABLE after DROP"))
                }
            }
            "truncate" => {
                self.eat_keyword("table");
                Ok(Statement::Truncate {
                    name: self.table_name()?,
                })
            }
            "use" => Ok(Statement::Use {
                keyspace: self.identifier()?,
            }),
            "insert" => self.insert(),
            "update" => self.update(),
            "delete" => self.delete(),
            "select" => self.select(),
            "begin" => Err(CqlError::invalid(
                "BEGIN BATCH inside a QUERY is not supported by this test server: send a BATCH frame",
            )),
            other => Err(CqlError::syntax(format!(
                "line 1: no viable alternative at input '{other}'"
            ))),
        }
    }

    fn if_exists(&mut self) -> Result<bool, CqlError> {
        if self.eat_keyword("if") {
            self.expect_keyword("exists")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn if_not_exists(&mut self) -> Result<bool, CqlError> {
        if self.eat_keyword("if") {
            self.expect_keyword("not")?;
            self.expect_keyword("exists")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn create_keyspace(&mut self) -> Result<Statement, CqlError> {
        let if_not_exists = self.if_not_exists()?;
        let name = self.identifier()?;
        self.expect_keyword("with")?;
        let mut replication = Vec::new();
        let mut durable_writes = true;
        loop {
            let option = self.identifier()?;
            self.expect_symbol("=")?;
            match option.as_str() {
                "replication" => {
                    let Term::Map(entries) = self.term()? else {
                        return Err(CqlError::syntax("replication must be a map"));
                    };
                    for (key, value) in entries {
                        replication.push((literal_text(&key)?, literal_text(&value)?));
                    }
                }
                "durable_writes" => {
                    durable_writes = matches!(self.term()?, Term::Boolean(true));
                }
                other => return Err(CqlError::syntax(format!("Unknown property '{other}'"))),
            }
            if !self.eat_keyword("and") {
                break;
            }
        }
        if !replication.iter().any(|(key, _)| key == "class") {
            return Err(CqlError::syntax(
                "Missing mandatory replication strategy class",
            ));
        }
        Ok(Statement::CreateKeyspace {
            name,
            if_not_exists,
            replication,
            durable_writes,
        })
    }

    fn create_table(&mut self) -> Result<Statement, CqlError> {
        let if_not_exists = self.if_not_exists()?;
        let name = self.table_name()?;
        self.expect_symbol("(")?;
        let mut columns = Vec::new();
        let mut partition_key = Vec::new();
        let mut clustering_key = Vec::new();
        loop {
            if self.eat_keyword("primary") {
                self.expect_keyword("key")?;
                self.expect_symbol("(")?;
                if self.eat_symbol("(") {
                    loop {
                        partition_key.push(self.identifier()?);
                        if !self.eat_symbol(",") {
                            break;
                        }
                    }
                    self.expect_symbol(")")?;
                } else {
                    partition_key.push(self.identifier()?);
                }
                while self.eat_symbol(",") {
                    clustering_key.push(self.identifier()?);
                }
                self.expect_symbol(")")?;
            } else {
                let column_name = self.identifier()?;
                let type_name = self.type_name()?;
                let is_static = self.eat_keyword("static");
                if self.eat_keyword("primary") {
                    self.expect_keyword("key")?;
                    partition_key.push(column_name.clone());
                }
                columns.push(ColumnDefinition {
                    name: column_name,
                    type_name,
                    is_static,
                });
            }
            if !self.eat_symbol(",") {
                break;
            }
        }
        self.expect_symbol(")")?;
        let mut clustering_order = Vec::new();
        let mut default_time_to_live = 0;
        if self.eat_keyword("with") {
            loop {
                if self.eat_keyword("clustering") {
                    self.expect_keyword("order")?;
                    self.expect_keyword("by")?;
                    self.expect_symbol("(")?;
                    loop {
                        let column = self.identifier()?;
                        let descending = if self.eat_keyword("desc") {
                            true
                        } else {
                            self.eat_keyword("asc");
                            false
                        };
                        clustering_order.push((column, descending));
                        if !self.eat_symbol(",") {
                            break;
                        }
                    }
                    self.expect_symbol(")")?;
                } else {
                    let option = self.identifier()?;
                    self.expect_symbol("=")?;
                    let value = self.term()?;
                    if option == "default_time_to_live" {
                        let Term::Number(number) = value else {
                            return Err(CqlError::syntax(
                                "default_time_to_live must be an integer",
                            ));
                        };
                        default_time_to_live = number.parse().map_err(|_| {
                            CqlError::syntax("default_time_to_live must be an integer")
                        })?;
                    }
                    // Other table options (compaction, caching, comment...) are accepted and ignored.
                }
                if !self.eat_keyword("and") {
                    break;
                }
            }
        }
        Ok(Statement::CreateTable {
            name,
            if_not_exists,
            columns,
            partition_key,
            clustering_key,
            clustering_order,
            default_time_to_live,
        })
    }

    fn type_name(&mut self) -> Result<String, CqlError> {
        let base = self.identifier()?;
        if self.eat_symbol("<") {
            let mut inner = Vec::new();
            loop {
                inner.push(self.type_name()?);
                if !self.eat_symbol(",") {
                    break;
                }
            }
            self.expect_symbol(">")?;
            return Ok(format!("{base}<{}>", inner.join(", ")));
        }
        Ok(base)
    }

    fn term(&mut self) -> Result<Term, CqlError> {
        match self.next()? {
            Token::Symbol("?") => {
                let index = self.bind_count;
                self.bind_count += 1;
                Ok(Term::Bind(index))
            }
            Token::Symbol(":") => Err(CqlError::invalid(
                "named bind markers are not supported by this test server",
            )),
            Token::Str(text) => Ok(Term::Str(text)),
            Token::Number(number) => Ok(Term::Number(number)),
            Token::Hex(bytes) => Ok(Term::Hex(bytes)),
            Token::Uuid(uuid) => Ok(Term::Uuid(uuid)),
            Token::Identifier(word) if word == "true" => Ok(Term::Boolean(true)),
            Token::Identifier(word) if word == "false" => Ok(Term::Boolean(false)),
            Token::Identifier(word) if word == "null" => Ok(Term::Null),
            Token::Symbol("{") => {
                let mut entries = Vec::new();
                if !self.eat_symbol("}") {
                    loop {
                        let key = self.term()?;
                        self.expect_symbol(":")?;
                        let value = self.term()?;
                        entries.push((key, value));
                        if !self.eat_symbol(",") {
                            break;
                        }
                    }
                    self.expect_symbol("}")?;
                }
                Ok(Term::Map(entries))
            }
            Token::Symbol("[") => {
                let mut elements = Vec::new();
                if !self.eat_symbol("]") {
                    loop {
                        elements.push(self.term()?);
                        if !self.eat_symbol(",") {
                            break;
                        }
                    }
                    self.expect_symbol("]")?;
                }
                Ok(Term::List(elements))
            }
            other => Err(CqlError::syntax(format!(
                "line 1: no viable alternative at input {other:?}"
            ))),
        }
    }

    /// `USING TTL t AND TIMESTAMP ts` (either, both, or neither): `(ttl, timestamp)`.
    fn using(&mut self) -> Result<(Option<Term>, Option<Term>), CqlError> {
        let mut ttl = None;
        let mut timestamp = None;
        if self.eat_keyword("using") {
            loop {
                if self.eat_keyword("ttl") {
                    ttl = Some(self.term()?);
                } else if self.eat_keyword("timestamp") {
                    timestamp = Some(self.term()?);
                } else if self.eat_keyword("timeout") {
                    self.skip_duration()?;
                } else {
                    return Err(CqlError::syntax(
                        "line 1: expected TTL or TIMESTAMP after USING",
                    ));
                }
                if !self.eat_keyword("and") {
                    break;
                }
            }
        }
        Ok((ttl, timestamp))
    }

    /// `USING TIMEOUT 2000ms` (sent by the driver to ScyllaDB for metadata queries): accepted, ignored.
    fn skip_duration(&mut self) -> Result<(), CqlError> {
        match self.next()? {
            Token::Number(_) => {
                if matches!(self.peek(), Some(Token::Identifier(_))) {
                    self.position += 1;
                }
                Ok(())
            }
            Token::Symbol("?") => {
                self.bind_count += 1;
                Ok(())
            }
            other => Err(CqlError::syntax(format!(
                "expected a duration, found {other:?}"
            ))),
        }
    }

    fn insert(&mut self) -> Result<Statement, CqlError> {
        self.expect_keyword("into")?;
        let table = self.table_name()?;
        if self.peek_keyword("json") {
            return Err(CqlError::invalid(
                "INSERT JSON is not supported by this test server",
            ));
        }
        self.expect_symbol("(")?;
        let mut columns = Vec::new();
        loop {
            columns.push(self.identifier()?);
            if !self.eat_symbol(",") {
                break;
            }
        }
        self.expect_symbol(")")?;
        self.expect_keyword("values")?;
        self.expect_symbol("(")?;
        let mut values = Vec::new();
        loop {
            values.push(self.term()?);
            if !self.eat_symbol(",") {
                break;
            }
        }
        self.expect_symbol(")")?;
        if columns.len() != values.len() {
            return Err(CqlError::invalid("Unmatched column names/values"));
        }
        let if_not_exists = self.if_not_exists()?;
        let (ttl, timestamp) = self.using()?;
        let if_not_exists = if_not_exists || self.if_not_exists()?;
        Ok(Statement::Insert {
            table,
            columns,
            values,
            if_not_exists,
            ttl,
            timestamp,
        })
    }

    fn update(&mut self) -> Result<Statement, CqlError> {
        let table = self.table_name()?;
        let (ttl, timestamp) = self.using()?;
        self.expect_keyword("set")?;
        let mut assignments = Vec::new();
        loop {
            let column = self.identifier()?;
            self.expect_symbol("=")?;
            let term = self.term()?;
            assignments.push((column, term));
            if !self.eat_symbol(",") {
                break;
            }
        }
        self.expect_keyword("where")?;
        let relations = self.relations()?;
        let condition = self.condition()?;
        Ok(Statement::Update {
            table,
            ttl,
            timestamp,
            assignments,
            relations,
            condition,
        })
    }

    fn delete(&mut self) -> Result<Statement, CqlError> {
        let mut columns = Vec::new();
        if !self.eat_keyword("from") {
            loop {
                columns.push(self.identifier()?);
                if !self.eat_symbol(",") {
                    break;
                }
            }
            self.expect_keyword("from")?;
        }
        let table = self.table_name()?;
        let (ttl, timestamp) = self.using()?;
        if ttl.is_some() {
            return Err(CqlError::invalid("DELETE does not accept USING TTL"));
        }
        self.expect_keyword("where")?;
        let relations = self.relations()?;
        let condition = self.condition()?;
        Ok(Statement::Delete {
            table,
            timestamp,
            columns,
            relations,
            condition,
        })
    }

    fn condition(&mut self) -> Result<Condition, CqlError> {
        if !self.eat_keyword("if") {
            return Ok(Condition::None);
        }
        if self.eat_keyword("exists") {
            return Ok(Condition::IfExists);
        }
        if self.eat_keyword("not") {
            self.expect_keyword("exists")?;
            return Ok(Condition::IfNotExists);
        }
        let mut conditions = Vec::new();
        loop {
            let column = self.identifier()?;
            self.expect_symbol("=")?;
            conditions.push((column, self.term()?));
            if !self.eat_keyword("and") {
                break;
            }
        }
        Ok(Condition::Columns(conditions))
    }

    fn operator(&mut self) -> Result<Operator, CqlError> {
        match self.next()? {
            Token::Symbol("=") => Ok(Operator::Eq),
            Token::Symbol("<") => Ok(Operator::Lt),
            Token::Symbol("<=") => Ok(Operator::Le),
            Token::Symbol(">") => Ok(Operator::Gt),
            Token::Symbol(">=") => Ok(Operator::Ge),
            Token::Symbol("!=") => Ok(Operator::NotEq),
            other => Err(CqlError::syntax(format!(
                "line 1: expected an operator, found {other:?}"
            ))),
        }
    }

    fn relations(&mut self) -> Result<Vec<Relation>, CqlError> {
        let mut relations = Vec::new();
        loop {
            if self.eat_symbol("(") {
                let mut columns = Vec::new();
                loop {
                    columns.push(self.identifier()?);
                    if !self.eat_symbol(",") {
                        break;
                    }
                }
                self.expect_symbol(")")?;
                let operator = self.operator()?;
                self.expect_symbol("(")?;
                let mut terms = Vec::new();
                loop {
                    terms.push(self.term()?);
                    if !self.eat_symbol(",") {
                        break;
                    }
                }
                self.expect_symbol(")")?;
                if terms.len() != columns.len() {
                    return Err(CqlError::invalid(format!(
                        "Expected {} elements in value tuple, but got {}",
                        columns.len(),
                        terms.len()
                    )));
                }
                relations.push(Relation::Tuple {
                    columns,
                    operator,
                    terms,
                });
            } else {
                let column = self.identifier()?;
                if self.eat_keyword("in") {
                    let terms = if self.eat_symbol("(") {
                        let mut terms = Vec::new();
                        if !self.eat_symbol(")") {
                            loop {
                                terms.push(self.term()?);
                                if !self.eat_symbol(",") {
                                    break;
                                }
                            }
                            self.expect_symbol(")")?;
                        }
                        InTerms::List(terms)
                    } else {
                        match self.term()? {
                            Term::Bind(index) => InTerms::Bind(index),
                            _ => return Err(CqlError::syntax("line 1: expected ( or ? after IN")),
                        }
                    };
                    relations.push(Relation::In { column, terms });
                } else {
                    let operator = self.operator()?;
                    let term = self.term()?;
                    relations.push(Relation::Single {
                        column,
                        operator,
                        term,
                    });
                }
            }
            if !self.eat_keyword("and") {
                break;
            }
        }
        Ok(relations)
    }

    fn select(&mut self) -> Result<Statement, CqlError> {
        if self.peek_keyword("json") || self.peek_keyword("distinct") {
            return Err(CqlError::invalid(
                "SELECT JSON and SELECT DISTINCT are not supported by this test server",
            ));
        }
        let selection = if self.eat_symbol("*") {
            Selection::All
        } else if self.peek_keyword("count")
            && matches!(self.tokens.get(self.position + 1), Some(Token::Symbol("(")))
        {
            self.position += 2;
            if !self.eat_symbol("*") {
                match self.next()? {
                    Token::Number(one) if one == "1" => {}
                    other => {
                        return Err(CqlError::invalid(format!(
                            "only COUNT(*) and COUNT(1) are supported, found {other:?}"
                        )))
                    }
                }
            }
            self.expect_symbol(")")?;
            Selection::Count
        } else {
            let mut columns = Vec::new();
            loop {
                let column = self.identifier()?;
                if self.eat_symbol("(") {
                    return Err(CqlError::invalid(format!(
                        "function {column}() is not supported by this test server"
                    )));
                }
                columns.push(column);
                if !self.eat_symbol(",") {
                    break;
                }
            }
            Selection::Columns(columns)
        };
        self.expect_keyword("from")?;
        let table = self.table_name()?;
        let relations = if self.eat_keyword("where") {
            self.relations()?
        } else {
            Vec::new()
        };
        let mut order_by = Vec::new();
        if self.eat_keyword("order") {
            self.expect_keyword("by")?;
            loop {
                let column = self.identifier()?;
                let descending = if self.eat_keyword("desc") {
                    true
                } else {
                    self.eat_keyword("asc");
                    false
                };
                order_by.push((column, descending));
                if !self.eat_symbol(",") {
                    break;
                }
            }
        }
        if self.eat_keyword("per") {
            return Err(CqlError::invalid(
                "PER PARTITION LIMIT is not supported by this test server",
            ));
        }
        let limit = if self.eat_keyword("limit") {
            Some(self.term()?)
        } else {
            None
        };
        let mut allow_filtering = false;
        if self.eat_keyword("allow") {
            self.expect_keyword("filtering")?;
            allow_filtering = true;
        }
        if self.eat_keyword("using") {
            self.expect_keyword("timeout")?;
            self.skip_duration()?;
        }
        Ok(Statement::Select {
            table,
            selection,
            relations,
            order_by,
            limit,
            allow_filtering,
        })
    }
}

fn literal_text(term: &Term) -> Result<String, CqlError> {
    match term {
        Term::Str(text) | Term::Number(text) => Ok(text.clone()),
        Term::Boolean(value) => Ok(value.to_string()),
        other => Err(CqlError::syntax(format!(
            "expected a constant, found {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_select_with_tuple_range_order_and_limit() {
        let (statement, binds) = parse(
            "SELECT a, b FROM ks.t WHERE p = ? AND (c1, c2) > (?, ?) ORDER BY c1 DESC LIMIT ?",
        )
        .unwrap();
        assert_eq!(binds, 4);
        let Statement::Select {
            relations,
            order_by,
            ..
        } = statement
        else {
            panic!("not a select");
        };
        assert_eq!(relations.len(), 2);
        assert_eq!(order_by, vec![("c1".to_string(), true)]);
    }

    #[test]
    fn parses_create_table_with_composite_key_and_options() {
        let (statement, _) = parse(
            "CREATE TABLE IF NOT EXISTS t (p1 text, p2 int, c bigint, s text static, v blob, \
             PRIMARY KEY ((p1, p2), c)) WITH CLUSTERING ORDER BY (c DESC) AND default_time_to_live = 60",
        )
        .unwrap();
        let Statement::CreateTable {
            partition_key,
            clustering_order,
            default_time_to_live,
            columns,
            ..
        } = statement
        else {
            panic!("not a create table");
        };
        assert_eq!(partition_key, vec!["p1", "p2"]);
        assert_eq!(clustering_order, vec![("c".to_string(), true)]);
        assert_eq!(default_time_to_live, 60);
        assert!(columns[3].is_static);
    }
}
