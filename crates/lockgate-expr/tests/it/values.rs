//! The value model as other crates use it: ordered objects with case-insensitive lookup (small and indexed),
//! conversions from Rust values, and thread-safety of parsed expressions.

use lockgate_expr::{Expr, Object, ParseOptions, Value, parse};

#[test]
fn objects_keep_insertion_order_and_find_keys_ignoring_case() {
    for size in [3usize, 40] {
        let mut object = Object::new();
        for i in 0..size {
            object.insert(format!("Key{i}"), Value::from(i as i64));
        }
        object.insert("KEY1", Value::from("replaced"));
        assert_eq!(
            object.len(),
            size,
            "a key differing only in case replaces the entry"
        );
        let keys: Vec<&str> = object.keys().collect();
        assert_eq!(keys[0], "Key0");
        assert_eq!(
            keys[1], "Key1",
            "the original spelling and position are kept"
        );
        assert_eq!(object.get("kEy1"), Some(&Value::from("replaced")));
        assert_eq!(
            object.get(&format!("KEY{}", size - 1)),
            Some(&Value::from((size - 1) as i64))
        );
        assert_eq!(object.get("missing"), None);
        assert_eq!(object.get_entry("key2").map(|(k, _)| k), Some("Key2"));
    }
}

#[test]
fn non_ascii_keys_match_ignoring_case() {
    let mut object = Object::new();
    object.insert("Straße", Value::from(1i64));
    object.insert("ÉTÉ", Value::from(2i64));
    assert_eq!(object.get("été"), Some(&Value::from(2i64)));
    assert_eq!(object.get("STRAßE"), Some(&Value::from(1i64)));
}

#[test]
fn parsed_expressions_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Expr>();
    assert_send_sync::<Value>();
    let expression = parse("eq(variables.a, 'x')", &ParseOptions::condition()).unwrap();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let expression = expression.clone();
            std::thread::spawn(move || {
                let mut context = lockgate_expr::MapContext::new();
                context.set_variable("A", "x");
                expression.evaluate_bool(&context).unwrap()
            })
        })
        .collect();
    for handle in handles {
        assert!(handle.join().unwrap());
    }
}

#[test]
fn dotless_i_is_not_folded_to_i() {
    assert!(!crate::truthy("endsWith('asdf_ı', 'I')"));
    assert!(crate::truthy("eq('ı', 'ı')"));
    assert!(crate::truthy("eq('é', 'É')"));
}
