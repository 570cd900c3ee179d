//! The rules about the text alone, run over the whole file (every stage, reachable or not, as
//! BuildKit's instruction parser does): NoEmptyContinuation, MaintainerDeprecated,
//! StageNameCasing, FromAsCasing, DuplicateStageName, ReservedStageName,
//! ConsistentInstructionCasing and (experimental) InvalidDefinitionDescription. It also notes the
//! ENV and LABEL lines in the legacy `key value` form, which the lowering reports for the stages
//! it lowers.

use std::collections::HashSet;

use super::{Linter, Rule};
use crate::ast::{Ast, Keyword, Node};

/// Names a stage may not take.
const RESERVED_STAGE_NAMES: [&str; 2] = ["context", "scratch"];

/// Runs the text rules over `ast`.
pub(crate) fn check(ast: &Ast, lint: &mut Linter) {
    for w in &ast.warnings {
        if w.message.starts_with("Empty continuation line") {
            lint.report(
                Rule::NoEmptyContinuation,
                0,
                w.span,
                "Empty continuation line".to_owned(),
            );
        }
    }
    let mut names = HashSet::new();
    let mut seen_from = false;
    let (mut lower, mut upper) = (0usize, 0usize);
    for node in &ast.nodes {
        let line = node.span.line;
        match node.keyword {
            Keyword::Maintainer => lint.report(
                Rule::MaintainerDeprecated,
                line,
                node.span,
                "Maintainer instruction is deprecated in favor of using label".to_owned(),
            ),
            Keyword::From => {
                seen_from = true;
                from(node, lint, &mut names);
            }
            Keyword::Arg => {
                let keys: Vec<String> = node
                    .args
                    .iter()
                    .map(|a| a.value.split('=').next().unwrap_or_default().to_owned())
                    .collect();
                definition_description(node, "ARG", &keys, lint);
            }
            Keyword::Env | Keyword::Label
                if node
                    .args
                    .chunks(3)
                    .any(|t| t.len() == 3 && t[2].value.is_empty()) =>
            {
                lint.legacy_kv.insert(line);
            }
            _ => {}
        }
        if seen_from {
            if node.name == node.name.to_lowercase() {
                lower += 1;
            } else if node.name == node.name.to_uppercase() {
                upper += 1;
            }
        }
    }
    // ConsistentInstructionCasing: every instruction from the first FROM on against the
    // majority (upper case on a tie).
    let majority_lower = lower > upper;
    let mut seen_from = false;
    for node in &ast.nodes {
        seen_from |= node.keyword == Keyword::From;
        if !seen_from {
            continue;
        }
        let casing = if majority_lower && node.name.to_lowercase() != node.name {
            "lowercase"
        } else if !majority_lower && node.name.to_uppercase() != node.name {
            "uppercase"
        } else {
            continue;
        };
        lint.report(
            Rule::ConsistentInstructionCasing,
            node.span.line,
            node.span,
            format!(
                "Command '{}' should match the case of the command majority ({casing})",
                node.name
            ),
        );
    }
}

/// The FROM rules: stage name casing, `AS` casing, reserved and duplicate names, description.
fn from(node: &Node, lint: &mut Linter, names: &mut HashSet<String>) {
    let line = node.span.line;
    let [_, as_word, name] = node.args.as_slice() else {
        return;
    };
    if name.value != name.value.to_lowercase() {
        lint.report(
            Rule::StageNameCasing,
            line,
            name.span,
            format!("Stage name '{}' should be lowercase", name.value),
        );
    }
    let from_lower = node.name == node.name.to_lowercase();
    let from_upper = node.name == node.name.to_uppercase();
    let as_matches = if from_lower {
        as_word.value == as_word.value.to_lowercase()
    } else if from_upper {
        as_word.value == as_word.value.to_uppercase()
    } else {
        // An inconsistent FROM is ConsistentInstructionCasing's to report.
        true
    };
    if !as_matches {
        lint.report(
            Rule::FromAsCasing,
            line,
            as_word.span,
            format!(
                "'{}' and '{}' keywords' casing do not match",
                as_word.value, node.name
            ),
        );
    }
    let stage = name.value.to_lowercase();
    if RESERVED_STAGE_NAMES.contains(&stage.as_str()) {
        lint.report(
            Rule::ReservedStageName,
            line,
            name.span,
            format!("Stage name should not use the same name as reserved stage {stage:?}"),
        );
    }
    if !names.insert(stage.clone()) {
        lint.report(
            Rule::DuplicateStageName,
            line,
            name.span,
            format!("Duplicate stage name {stage:?}, stage names should be unique"),
        );
    }
    definition_description(node, "FROM", &[stage], lint);
}

/// InvalidDefinitionDescription: the comment right above FROM/ARG should start with the name.
fn definition_description(node: &Node, instruction: &str, keys: &[String], lint: &mut Linter) {
    let (Some(last), Some(first_key)) = (node.comments.last(), keys.first()) else {
        return;
    };
    let first_word = last.split(' ').next().unwrap_or_default();
    if keys.iter().any(|k| k == first_word) {
        return;
    }
    let example = if keys.len() > 1 {
        "<arg_key>"
    } else {
        first_key.as_str()
    };
    lint.report(
        Rule::InvalidDefinitionDescription,
        node.span.line,
        node.span,
        format!("Comment for {instruction} should follow the format: `# {example} <description>`"),
    );
}
