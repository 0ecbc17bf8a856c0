//! Token objects that are not keys, as the module asks for them: listed to
//! any connection (private ones only to the logged-in user), stored and
//! destroyed by a logged-in one.

use qkeyd_p11_proto::{Attribute, Response};

use super::{Conn, ModuleError, Outcome, Server, pin::Role};
use crate::objects;

impl Server {
    pub(super) fn list_objects(&self, conn: &Conn) -> Outcome {
        Ok(Response::Objects(self.objects.list(conn.role == Some(Role::User))))
    }

    /// A token object is durable node state: making, changing or destroying
    /// one needs a login (the security officer: public objects only).
    pub(super) fn put_object(
        &self,
        conn: &Conn,
        id: &str,
        private: bool,
        attrs: Vec<Attribute>,
    ) -> Outcome {
        let user = match conn.role {
            None => return Err(ModuleError::NotLoggedIn),
            Some(role) => role == Role::User,
        };
        if private && !user {
            return Err(ModuleError::NotLoggedIn);
        }
        // The module checked the template; the daemon still keeps to what a
        // token object may be, whoever speaks on the socket.
        let flag = |t| objects::flag(&attrs, t);
        if !matches!(
            objects::class_of(&attrs),
            Some(objects::CKO_DATA | objects::CKO_CERTIFICATE | objects::CKO_PUBLIC_KEY)
        ) || flag(objects::CKA_PRIVATE) != private
            || (flag(objects::CKA_TRUSTED) && conn.role != Some(Role::So))
        {
            return Err(ModuleError::BadObject);
        }
        let id = (!id.is_empty()).then_some(id);
        Ok(Response::ObjectId(self.objects.put(id, private, attrs, user, "pkcs11")?))
    }

    pub(super) fn destroy_object(&self, conn: &Conn, id: &str) -> Outcome {
        let Some(role) = conn.role else { return Err(ModuleError::NotLoggedIn) };
        self.objects.destroy(id, role == Role::User, "pkcs11")?;
        Ok(Response::Done)
    }
}
