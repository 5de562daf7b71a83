//! Contacts: the people sales works with, kept as written and matched on normalized e-mail and
//! phone so the same person is never recorded twice.

use kizuna_errors::{ApiError, Validator};
use kizuna_normalize::{email_key, phone_key};
use kizuna_proto::deals::Contact;
use kizuna_store::{Store, apply_mask, parse_parent};
use prost_types::FieldMask;

use crate::error::{Error, Result};
use crate::tables::Contacts;

/// Checks a contact's caller-settable fields; `prefix` is the request field (`contact`).
pub fn validate(contact: &Contact, prefix: &str) -> Result<(), ApiError> {
    let mut v = Validator::new();
    let f = |name: &str| format!("{prefix}.{name}");
    let identified = [
        &contact.given_name,
        &contact.family_name,
        &contact.email,
        &contact.phone,
    ]
    .iter()
    .any(|value| !value.trim().is_empty());
    v.check(
        identified,
        &f("family_name"),
        "at least one of given_name, family_name, email or phone is required",
    );
    v.email(&f("email"), &contact.email)
        .phone(&f("phone"), &contact.phone)
        .max_chars(&f("phone"), &contact.phone, 32);
    for (name, value, max) in [
        ("given_name", &contact.given_name, 100),
        ("family_name", &contact.family_name, 100),
        ("given_name_reading", &contact.given_name_reading, 100),
        ("family_name_reading", &contact.family_name_reading, 100),
        ("company", &contact.company, 200),
        ("job_title", &contact.job_title, 100),
        ("department", &contact.department, 100),
        ("owner", &contact.owner, 256),
    ] {
        v.max_chars(&f(name), value, max);
    }
    v.check(contact.tags.len() <= 50, &f("tags"), "at most 50 tags");
    for (i, tag) in contact.tags.iter().enumerate() {
        v.required_max(&f(&format!("tags[{i}]")), tag, 64);
    }
    if !contact.lead.is_empty() && parse_parent(&contact.lead, "leads").is_none() {
        v.violation(
            f("lead"),
            "must be a resource name like `leads/{id}` (ids: a-z, 0-9, -)",
        );
    }
    v.finish()
}

/// Clears the output-only fields a caller may have sent.
fn prepare_new(mut contact: Contact) -> Contact {
    contact.name.clear();
    contact.etag.clear();
    contact.create_time = None;
    contact.update_time = None;
    contact
}

/// Creates a contact, refusing one whose normalized e-mail or phone is already taken.
pub async fn create(
    store: &Store,
    contact: Contact,
    contact_id: &str,
    request_id: &str,
) -> Result<Contact> {
    validate(&contact, "contact")?;
    let contact = prepare_new(contact);
    store
        .create_with::<Contacts, Error, _>(
            "",
            contact_id,
            contact,
            request_id,
            async |tx, contact| match find_duplicate(tx, contact, "").await? {
                Some((key, existing)) => Err(Error::DuplicateContact { key, existing }),
                None => Ok(()),
            },
        )
        .await
}

/// Applies `patch` under `mask` to the contact it names, guarded by its etag.
pub async fn update(store: &Store, patch: Contact, mask: Option<&FieldMask>) -> Result<Contact> {
    kizuna_store::require_name::<Contacts>(&patch.name, "contact.name")?;
    let mut tx = store.begin().await?;
    let mut contact = tx.get::<Contacts>(&patch.name).await?;
    kizuna_store::check_etag::<Contacts>(&contact, &patch.etag)?;
    apply_mask!(contact, patch, mask, [
        "given_name" => given_name, "family_name" => family_name,
        "given_name_reading" => given_name_reading, "family_name_reading" => family_name_reading,
        "email" => email, "phone" => phone, "company" => company, "job_title" => job_title,
        "department" => department, "owner" => owner, "tags" => tags,
    ])?;
    validate(&contact, "contact")?;
    if let Some((key, existing)) = find_duplicate(&mut tx, &contact, &contact.name).await? {
        return Err(Error::DuplicateContact { key, existing });
    }
    let updated = tx.replace::<Contacts>(contact).await?;
    tx.emit::<Contacts>("updated", &updated).await?;
    tx.commit().await?;
    Ok(updated)
}

/// The first other contact sharing the normalized e-mail or phone of `contact`.
async fn find_duplicate(
    tx: &mut kizuna_store::WriteTx<'_>,
    contact: &Contact,
    except_name: &str,
) -> Result<Option<(&'static str, String)>> {
    for (key, column, value) in [
        ("email", "email_key", email_key(&contact.email)),
        ("phone", "phone_key", phone_key(&contact.phone)),
    ] {
        if let Some(existing) = tx
            .find_other::<Contacts>(column, &value, except_name)
            .await?
        {
            return Ok(Some((key, existing)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(result: Result<(), ApiError>) -> Vec<String> {
        match result {
            Err(ApiError::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn a_contact_needs_a_name_an_email_or_a_phone() {
        assert_eq!(
            fields(validate(&Contact::default(), "contact")),
            ["contact.family_name"]
        );
        for contact in [
            Contact {
                given_name: "太郎".into(),
                ..Contact::default()
            },
            Contact {
                email: "taro@example.jp".into(),
                ..Contact::default()
            },
            Contact {
                phone: "03-1234-5678".into(),
                ..Contact::default()
            },
        ] {
            validate(&contact, "contact").expect("identified");
        }
    }

    #[test]
    fn fields_are_checked_and_bounded() {
        let contact = Contact {
            family_name: "山田".into(),
            email: "not-an-email".into(),
            phone: "call me".into(),
            company: "x".repeat(201),
            department: "x".repeat(101),
            tags: vec!["vip".into(), String::new()],
            lead: "leads/".into(),
            ..Contact::default()
        };
        assert_eq!(
            fields(validate(&contact, "contact")),
            [
                "contact.email",
                "contact.phone",
                "contact.company",
                "contact.department",
                "contact.tags[1]",
                "contact.lead",
            ]
        );
    }
}
