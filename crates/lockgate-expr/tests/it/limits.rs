//! Limits and hostile input: nesting depth, expression length, binary junk and huge literals give error values,
//! never a panic or a stack overflow.

use lockgate_expr::{ErrorKind, HARD_MAX_DEPTH, MapContext, ParseOptions, Value, parse};

fn nested_nots(count: usize) -> String {
    format!("{}true{}", "not(".repeat(count), ")".repeat(count))
}

#[test]
fn forty_nine_nested_calls_parse_and_fifty_do_not() {
    assert!(parse(&nested_nots(49), &ParseOptions::condition()).is_ok());
    let e = parse(&nested_nots(50), &ParseOptions::condition()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ExceededMaxDepth);
    assert_eq!(
        e.message,
        "expression exceeds the maximum depth of 50 levels"
    );
}

#[test]
fn open_indexes_count_toward_the_depth_but_property_chains_do_not() {
    let deep_index = format!("{}variables['a']{}", "not(".repeat(49), ")".repeat(49));
    assert_eq!(
        parse(&deep_index, &ParseOptions::condition())
            .unwrap_err()
            .kind,
        ErrorKind::ExceededMaxDepth
    );
    let long_chain = format!("variables{}", ".a".repeat(500));
    let options = ParseOptions {
        max_length: 10_000,
        ..ParseOptions::condition()
    };
    let expression = parse(&long_chain, &options).unwrap();
    assert_eq!(
        expression.evaluate(&MapContext::new()).unwrap(),
        Value::Null
    );
}

#[test]
fn two_thousand_characters_parse_and_more_do_not() {
    let filler = |n: usize| format!("eq('{}', 'a')", "a".repeat(n));
    let ok = filler(2000 - "eq('', 'a')".len());
    assert_eq!(ok.len(), 2000);
    assert!(parse(&ok, &ParseOptions::condition()).is_ok());
    let too_long = filler(2001 - "eq('', 'a')".len());
    assert_eq!(
        parse(&too_long, &ParseOptions::condition())
            .unwrap_err()
            .kind,
        ErrorKind::ExceededMaxLength
    );
    // The limit counts characters (UTF-16 units), not bytes.
    let accented = format!("'{}'", "é".repeat(1998));
    assert!(parse(&accented, &ParseOptions::condition()).is_ok());
}

#[test]
fn a_one_megabyte_literal_is_rejected_or_parsed_when_allowed() {
    let literal = format!("'{}'", "x".repeat(1 << 20));
    assert_eq!(
        parse(&literal, &ParseOptions::condition())
            .unwrap_err()
            .kind,
        ErrorKind::ExceededMaxLength
    );
    let options = ParseOptions {
        max_length: usize::MAX,
        ..ParseOptions::condition()
    };
    let value = parse(&literal, &options)
        .unwrap()
        .evaluate(&MapContext::new())
        .unwrap();
    assert_eq!(value.as_str().map(str::len), Some(1 << 20));
    let number = "9".repeat(1 << 20);
    assert_eq!(
        parse(&number, &options).unwrap_err().kind,
        ErrorKind::UnrecognizedValue
    );
}

#[test]
fn deep_nesting_beyond_any_limit_is_an_error_not_a_stack_overflow() {
    let options = ParseOptions {
        max_depth: usize::MAX,
        max_length: usize::MAX,
        ..ParseOptions::condition()
    };
    for text in [
        nested_nots(200_000),
        "(".repeat(200_000),
        format!("{}1", "variables[".repeat(200_000)),
    ] {
        let e = parse(&text, &options).unwrap_err();
        assert!(
            matches!(
                e.kind,
                ErrorKind::ExceededMaxDepth | ErrorKind::UnexpectedSymbol
            ),
            "{e:?}"
        );
    }
    assert_eq!(
        parse(&nested_nots(HARD_MAX_DEPTH), &options)
            .unwrap_err()
            .kind,
        ErrorKind::ExceededMaxDepth
    );
    let deep_but_allowed = nested_nots(HARD_MAX_DEPTH - 1);
    let value = parse(&deep_but_allowed, &options)
        .unwrap()
        .evaluate(&MapContext::new())
        .unwrap();
    assert_eq!(
        value,
        Value::Boolean((HARD_MAX_DEPTH - 1).is_multiple_of(2))
    );
}

#[test]
fn binary_junk_gives_errors() {
    let mut state: u32 = 12345;
    let options = ParseOptions {
        max_length: usize::MAX,
        ..ParseOptions::syntax_only()
    };
    for length in 0..400 {
        let bytes: Vec<u8> = (0..length)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (state >> 16) as u8
            })
            .collect();
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(expression) = parse(&text, &options) {
            // Whatever parses must print and evaluate without panicking.
            let _ = expression.to_string();
            let _ = expression.evaluate(&MapContext::new());
        }
    }
    for junk in [
        "\0",
        "\u{feff}eq(1,1)",
        "eq(1,1)\u{0}",
        "''''''''",
        "[[[]]]",
        "...",
        "-",
        "*",
        "\u{10ffff}",
    ] {
        let _ = parse(junk, &options);
    }
    assert!(parse("\0", &ParseOptions::condition()).is_err());
}

#[test]
fn string_functions_refuse_results_over_ten_megabytes() {
    let mut context = MapContext::new();
    context.set_variable("big", "x".repeat(1 << 20));
    let run = |text: &str| {
        parse(text, &ParseOptions::condition())
            .unwrap()
            .evaluate(&context)
    };
    let ten = "{0}".repeat(10);
    assert_eq!(
        run(&format!("length(format('{ten}', variables.big))")).unwrap(),
        Value::Number(10.0 * (1 << 20) as f64)
    );
    let eleven = "{0}".repeat(11);
    let e = run(&format!("format('{eleven}', variables.big)")).unwrap_err();
    assert_eq!(e.message, "format() would produce more than 10485760 bytes");
    let e = run("replace(variables.big, 'x', 'xxxxxxxxxxxx')").unwrap_err();
    assert_eq!(
        e.message,
        "replace() would produce more than 10485760 bytes"
    );
    let e = run("join(variables.big, split('a,b,c,d,e,f,g,h,i,j,k,l', ','))").unwrap_err();
    assert_eq!(e.message, "join() would produce more than 10485760 bytes");
    assert_eq!(
        run("length(replace(variables.big, 'x', 'yy'))").unwrap(),
        Value::Number(2.0 * (1 << 20) as f64)
    );
}

/// A context whose budget for built strings is `limit` bytes, counting what the evaluator charges.
struct Budgeted {
    inner: MapContext,
    used: std::cell::Cell<usize>,
    limit: usize,
}

impl lockgate_expr::Context for Budgeted {
    fn lookup<'c>(
        &'c self,
        name: &str,
        path: &[lockgate_expr::PathKey<'_>],
    ) -> Result<lockgate_expr::Resolved<'c>, String> {
        self.inner.lookup(name, path)
    }

    fn charge(&self, bytes: usize) -> Result<(), String> {
        self.used.set(self.used.get() + bytes);
        if self.used.get() > self.limit {
            return Err(format!("over the budget of {} bytes", self.limit));
        }
        Ok(())
    }
}

#[test]
fn every_built_string_is_charged_and_an_exhausted_budget_stops_the_evaluation() {
    let context = Budgeted {
        inner: MapContext::new(),
        used: std::cell::Cell::new(0),
        limit: 1_000,
    };
    // replace builds 8 bytes, format 10, split 3 items of 1 byte (plus one each), upper 3.
    let small = parse(
        "format('{0}{1}', replace('aaaa', 'a', 'bb'), join('', split('x,y,z', ',')))",
        &ParseOptions::template(),
    )
    .unwrap();
    assert_eq!(
        small.evaluate(&context).unwrap(),
        Value::String("bbbbbbbbxyz".into())
    );
    assert_eq!(context.used.get(), 8 + 6 + 3 + 11);
    let big = parse(
        "replace(replace(replace('aaaaaaaaaa', 'a', 'aaaaaaaaaa'), 'a', 'aaaaaaaaaa'), 'a', 'aaaaaaaaaa')",
        &ParseOptions::template(),
    )
    .unwrap();
    let error = big.evaluate(&context).unwrap_err();
    assert_eq!(error.message, "over the budget of 1000 bytes");
    assert!(context.used.get() > 1_000 && context.used.get() < 20_000);
}
