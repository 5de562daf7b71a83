//! Field masks for `Update` methods (AIP-134).

/// Copies the fields named by `mask` from `patch` into `target`, or, when the mask is empty, every
/// listed field that is set in `patch` (AIP-134's implied mask). `*` replaces every listed field.
/// A path that is not listed is INVALID_ARGUMENT on `update_mask` and changes nothing.
///
/// ```ignore
/// apply_mask!(current, patch, request.update_mask.as_ref(), ["email" => email, "phone" => phone])?;
/// ```
#[macro_export]
macro_rules! apply_mask {
    ($target:expr, $patch:expr, $mask:expr, [$($path:literal => $field:ident),* $(,)?]) => {{
        let paths: Vec<String> = $mask.map(|m: &$crate::prost_types::FieldMask| m.paths.clone()).unwrap_or_default();
        let allowed: &[&str] = &[$($path),*];
        match paths.iter().find(|p| p.as_str() != "*" && !allowed.contains(&p.as_str())) {
            Some(bad) => Err($crate::ApiError::invalid(
                "update_mask",
                format!("`{bad}` cannot be updated; updatable fields: {}", allowed.join(", ")),
            )),
            None => {
                let all = paths.iter().any(|p| p == "*");
                $(
                    let named = all || paths.iter().any(|p| p == $path);
                    if named || (paths.is_empty() && $crate::mask::is_set(&$patch.$field)) {
                        $target.$field = $patch.$field.clone();
                    }
                )*
                Ok::<(), $crate::ApiError>(())
            }
        }
    }};
}

/// Whether `value` differs from its type's default (proto3's notion of "set").
pub fn is_set<T: Default + PartialEq>(value: &T) -> bool {
    *value != T::default()
}

#[cfg(test)]
mod tests {
    #[derive(Clone, Debug, Default, PartialEq)]
    struct Thing {
        a: String,
        b: i64,
        c: String,
    }

    fn mask(paths: &[&str]) -> prost_types::FieldMask {
        prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn named_paths_only() {
        let mut target = Thing {
            a: "old".into(),
            b: 1,
            c: "keep".into(),
        };
        let patch = Thing {
            a: String::new(),
            b: 2,
            c: "ignored".into(),
        };
        apply_mask!(target, patch, Some(&mask(&["a", "b"])), ["a" => a, "b" => b]).expect("valid");
        assert_eq!(
            target,
            Thing {
                a: String::new(),
                b: 2,
                c: "keep".into()
            }
        );
    }

    #[test]
    fn implied_mask_takes_set_fields() {
        let mut target = Thing {
            a: "old".into(),
            b: 1,
            c: "x".into(),
        };
        let patch = Thing {
            a: "new".into(),
            b: 0,
            c: String::new(),
        };
        apply_mask!(target, patch, None::<&prost_types::FieldMask>, ["a" => a, "b" => b, "c" => c])
            .expect("valid");
        assert_eq!(
            target,
            Thing {
                a: "new".into(),
                b: 1,
                c: "x".into()
            }
        );
    }

    #[test]
    fn unknown_path_changes_nothing() {
        let mut target = Thing::default();
        let patch = Thing {
            a: "new".into(),
            ..Thing::default()
        };
        let result = apply_mask!(target, patch, Some(&mask(&["a", "etag"])), ["a" => a]);
        assert!(result.is_err());
        assert_eq!(target, Thing::default());
    }
}
