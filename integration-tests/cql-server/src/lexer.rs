//! The CQL tokenizer: identifiers (unquoted ones lowercased), quoted identifiers, string,
//! number, blob and UUID literals, and symbols.

use crate::error::CqlError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Token {
    Identifier(String),
    QuotedIdentifier(String),
    Str(String),
    Number(String),
    Hex(Vec<u8>),
    Uuid(String),
    Symbol(&'static str),
}

pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, CqlError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        if c.is_whitespace() {
            index += 1;
            continue;
        }
        if c == '-' && chars.get(index + 1) == Some(&'-') {
            while index < chars.len() && chars[index] != '\n' {
                index += 1;
            }
            continue;
        }
        if c == '\'' {
            let mut literal = String::new();
            index += 1;
            loop {
                match chars.get(index) {
                    None => return Err(CqlError::syntax("unterminated string literal")),
                    Some('\'') if chars.get(index + 1) == Some(&'\'') => {
                        literal.push('\'');
                        index += 2;
                    }
                    Some('\'') => {
                        index += 1;
                        break;
                    }
                    Some(other) => {
                        literal.push(*other);
                        index += 1;
                    }
                }
            }
            tokens.push(Token::Str(literal));
            continue;
        }
        if c == '"' {
            let mut name = String::new();
            index += 1;
            loop {
                match chars.get(index) {
                    None => return Err(CqlError::syntax("unterminated quoted identifier")),
                    Some('"') if chars.get(index + 1) == Some(&'"') => {
                        name.push('"');
                        index += 2;
                    }
                    Some('"') => {
                        index += 1;
                        break;
                    }
                    Some(other) => {
                        name.push(*other);
                        index += 1;
                    }
                }
            }
            tokens.push(Token::QuotedIdentifier(name));
            continue;
        }
        // A UUID literal: 8-4-4-4-12 hex digits.
        if c.is_ascii_hexdigit() && index + 36 <= chars.len() {
            let candidate: String = chars[index..index + 36].iter().collect();
            let is_uuid = candidate.char_indices().all(|(position, ch)| {
                if [8, 13, 18, 23].contains(&position) {
                    ch == '-'
                } else {
                    ch.is_ascii_hexdigit()
                }
            });
            let followed_by_word = chars
                .get(index + 36)
                .is_some_and(|next| next.is_alphanumeric() || *next == '_');
            if is_uuid && !followed_by_word {
                tokens.push(Token::Uuid(candidate));
                index += 36;
                continue;
            }
        }
        if c == '0' && matches!(chars.get(index + 1), Some('x') | Some('X')) {
            let start = index + 2;
            let mut end = start;
            while end < chars.len() && chars[end].is_ascii_hexdigit() {
                end += 1;
            }
            let digits: String = chars[start..end].iter().collect();
            if !digits.len().is_multiple_of(2) {
                return Err(CqlError::syntax(
                    "blob constant with an odd number of hex digits",
                ));
            }
            let bytes = (0..digits.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&digits[i..i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| CqlError::syntax("invalid blob constant"))?;
            tokens.push(Token::Hex(bytes));
            index = end;
            continue;
        }
        let starts_number = c.is_ascii_digit()
            || (c == '-'
                && chars
                    .get(index + 1)
                    .is_some_and(|next| next.is_ascii_digit()));
        if starts_number {
            let start = index;
            index += 1;
            while index < chars.len()
                && (chars[index].is_ascii_digit()
                    || chars[index] == '.'
                    || chars[index] == 'e'
                    || chars[index] == 'E')
            {
                index += 1;
            }
            tokens.push(Token::Number(chars[start..index].iter().collect()));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = index;
            while index < chars.len()
                && (chars[index].is_alphanumeric() || chars[index] == '_' || chars[index] == '$')
            {
                index += 1;
            }
            let word: String = chars[start..index].iter().collect();
            tokens.push(Token::Identifier(word.to_ascii_lowercase()));
            continue;
        }
        let two: String = chars[index..(index + 2).min(chars.len())].iter().collect();
        let symbol = match two.as_str() {
            "<=" => Some("<="),
            ">=" => Some(">="),
            "!=" => Some("!="),
            _ => None,
        };
        if let Some(symbol) = symbol {
            tokens.push(Token::Symbol(symbol));
            index += 2;
            continue;
        }
        let symbol = match c {
            '(' => "(",
            ')' => ")",
            ',' => ",",
            ';' => ";",
            '=' => "=",
            '<' => "<",
            '>' => ">",
            '?' => "?",
            '*' => "*",
            '.' => ".",
            '{' => "{",
            '}' => "}",
            ':' => ":",
            '[' => "[",
            ']' => "]",
            _ => {
                return Err(CqlError::syntax(format!(
                    "line 1: unexpected character '{c}'"
                )))
            }
        };
        tokens.push(Token::Symbol(symbol));
        index += 1;
    }
    Ok(tokens)
}
