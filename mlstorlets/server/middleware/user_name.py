"""Give the storlet ACL code account-qualified identities under tempauth.

The upstream storlet middleware grants a storlet ACL
(``POST`` with ``X-Storlet-Container-Read: <user>`` and ``X-Storlet-Name``)
as the container referrer ACL ``.r:storlets.<user>_<storlet>``, and lets a
user whose plain GET was refused read through that storlet by retrying
with the referrer ``//storlets.<X-User-Name>_<storlet>``.  tempauth sets no
``X-User-Name``; this filter, placed right after tempauth, provides it,
always overwriting what a client sent, so it cannot be forged.

A bare user name is not an identity: the users ``mlstorlets:admin`` and
``other:admin`` of two accounts share the name ``admin``.  So, for the
storlet ACL code only, the identity is the account-qualified
``account:user``, written in the ACL in a form a referrer host name can
carry (:func:`acl_identity`):

* a grant names ``account:user``; a bare ``user`` means that user of the
  container's own account;
* a storlet request (``X-Run-Storlet``) carries the requester's qualified
  identity in ``X-User-Name``.

Other requests get the bare user name in ``X-User-Name`` and the account in
``X-Tenant-Name``, as keystone would set them (s3api reads the two).

A referrer ACL is also satisfied by any request that sends that referrer,
and upstream refuses client referrers naming ``storlets`` only case-
sensitively while host names match in any case: this filter refuses such a
referrer in any case.
"""

import string

from swift.common.swob import HTTPBadRequest, HTTPForbidden, Request

# What a referrer host name keeps as is (urlparse lowercases it); every
# other byte is written '-xx', so the form is unambiguous and never holds
# '_', which separates the identity from the storlet name in the ACL.
_KEPT = frozenset(string.ascii_lowercase + string.digits)
REFERER_PREFIX = "storlets"


def acl_identity(account, user):
    """The form of ``account:user`` that the storlet ACL carries.

    >>> acl_identity('other', 'admin')
    'other-3aadmin'
    """
    return "".join(
        chr(b) if chr(b) in _KEPT else "-%02x" % b
        for b in ("%s:%s" % (account, user)).encode("utf8")
    )


class UserNameMiddleware(object):
    def __init__(self, app, conf):
        self.app = app

    def __call__(self, env, start_response):
        req = Request(env)
        referer = (req.referer or "").lower()
        if REFERER_PREFIX in referer:
            return HTTPForbidden(
                body=b"Referrer containing storlets is not allowed\n", request=req
            )(env, start_response)
        env.pop("HTTP_X_USER_NAME", None)
        env.pop("HTTP_X_TENANT_NAME", None)
        identity = _identity(env.get("REMOTE_USER"))
        if identity:
            account, user = identity
            env["HTTP_X_TENANT_NAME"] = account
            env["HTTP_X_USER_NAME"] = user
            if "X-Run-Storlet" in req.headers:
                env["HTTP_X_USER_NAME"] = acl_identity(account, user)
        grantee = req.headers.get("X-Storlet-Container-Read")
        if req.method == "POST" and grantee is not None:
            error = self._qualify_grant(req, grantee)
            if error:
                return error(env, start_response)
        return self.app(env, start_response)

    @staticmethod
    def _qualify_grant(req, grantee):
        """Write a storlet ACL grant's user as an account-qualified identity.

        Returns an error response for a grant that names no identity.
        """
        account, sep, user = grantee.strip().rpartition(":")
        if not sep:
            try:
                account = req.split_path(3, 3)[1]
            except ValueError:
                return None  # not a container: upstream refuses it
            # The storage account is <reseller prefix>_<account>; tempauth
            # account names hold no '_'.
            account = account.split("_", 1)[-1]
        if not account or not user or "," in grantee:
            return HTTPBadRequest(
                body=(
                    "X-Storlet-Container-Read must name one user, as "
                    "account:user or user (of this account), not %r\n" % grantee
                ).encode("utf8"),
                request=req,
            )
        req.headers["X-Storlet-Container-Read"] = acl_identity(account, user)
        return None


def _identity(remote_user):
    """``(account, user)`` of tempauth's groups, else None.

    tempauth's ``REMOTE_USER`` is ``account,account:user,AUTH_account``.
    """
    for group in (remote_user or "").split(","):
        account, sep, user = group.partition(":")
        if sep:
            return account, user
    return None


def filter_factory(global_conf, **local_conf):
    conf = dict(global_conf, **local_conf)

    def user_name_filter(app):
        return UserNameMiddleware(app, conf)

    return user_name_filter
