//! `${{ }}` and `$[ ]` inside strings: finding them, rendering embedded ones to text, keeping the type of a
//! whole-value expression, and error spans relative to the whole string.

use lockgate_expr::{
    ErrorKind, MapContext, Object, ParseOptions, Piece, Syntax, Value, render, split_expressions,
};

use crate::s;

fn context() -> MapContext {
    let mut context = MapContext::new();
    let mut parameters = Object::new();
    parameters.insert("count", Value::Number(3.0));
    parameters.insert("flag", Value::Boolean(true));
    parameters.insert("list", Value::Array(vec![s("a")]));
    context.set("parameters", Value::Object(parameters));
    context.set_variable("Build.SourceBranch", "refs/heads/main");
    context
}

#[test]
fn splits_text_and_expressions_respecting_quotes_and_brackets() {
    let text = "a ${{ '}}' }} b ${{ parameters.x }}";
    let pieces = split_expressions(text, Syntax::Template).unwrap();
    assert_eq!(pieces.len(), 4);
    assert_eq!(pieces[0], Piece::Text("a "));
    assert!(matches!(
        pieces[1],
        Piece::Expression { body: " '}}' ", .. }
    ));
    assert!(matches!(
        pieces[3],
        Piece::Expression {
            body: " parameters.x ",
            ..
        }
    ));
    let runtime = split_expressions("$[ variables['a]'] ]", Syntax::Runtime).unwrap();
    assert!(matches!(
        runtime.as_slice(),
        [Piece::Expression {
            body: " variables['a]'] ",
            ..
        }]
    ));
    assert_eq!(
        split_expressions("plain", Syntax::Template).unwrap(),
        vec![Piece::Text("plain")]
    );
}

#[test]
fn a_whole_value_keeps_its_type_and_embedded_ones_become_text() {
    let options = ParseOptions::template();
    let context = context();
    assert_eq!(
        render(
            "${{ parameters.count }}",
            Syntax::Template,
            &options,
            &context
        )
        .unwrap(),
        Value::Number(3.0)
    );
    assert_eq!(
        render(
            "${{ parameters.list }}",
            Syntax::Template,
            &options,
            &context
        )
        .unwrap(),
        Value::Array(vec![s("a")])
    );
    assert_eq!(
        render(
            "n=${{ parameters.count }} f=${{ parameters.flag }} v=${{ variables.nosuch }}.",
            Syntax::Template,
            &options,
            &context
        )
        .unwrap(),
        s("n=3 f=True v=.")
    );
    assert_eq!(
        render("no expression", Syntax::Template, &options, &context).unwrap(),
        s("no expression")
    );
}

#[test]
fn runtime_expressions_render_booleans_capitalised() {
    let value = render(
        "$[eq(variables['Build.SourceBranch'], 'refs/heads/main')]",
        Syntax::Runtime,
        &ParseOptions::runtime(),
        &context(),
    )
    .unwrap();
    assert_eq!(value.to_display_string(), "True");
}

#[test]
fn errors_point_into_the_whole_string() {
    let options = ParseOptions::template();
    let text = "x ${{ eq(1, 3.4a) }}";
    let e = render(text, Syntax::Template, &options, &context()).unwrap_err();
    assert_eq!(e.span.text(text), "3.4a");
    let text = "x ${{ eq(1, 2) ";
    let e = render(text, Syntax::Template, &options, &context()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnclosedExpression);
    let text = "list: ${{ parameters.list }}";
    let e = render(text, Syntax::Template, &options, &context()).unwrap_err();
    assert_eq!(e.message, "cannot insert an array into a string");
    assert_eq!(e.span.text(text), "${{ parameters.list }}");
}
