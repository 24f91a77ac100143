"""Only a reseller admin turns storlets on or off for an account.

Upstream runs storlets on an account whose metadata says
``X-Account-Meta-Storlet-Enabled: True``, and an account's own admin may
set its account's metadata: any tenant could enable storlets for itself,
however the operator meant to offer them.  This filter, right after
authentication in the proxy, refuses (``403``) a ``POST`` or ``PUT`` of an
account that sets or removes that key unless the request is a reseller
admin's (``reseller_request``, which tempauth's ``.reseller_admin`` group
and keystoneauth's ``reseller_admin_role`` set).
"""

from swift.common.swob import HTTPForbidden, Request
from swift.common.utils import split_path

KEY = "X-Account-Meta-Storlet-Enabled"
REMOVE = "X-Remove-Account-Meta-Storlet-Enabled"


class StorletEnableMiddleware(object):
    def __init__(self, app, conf):
        self.app = app

    def __call__(self, env, start_response):
        req = Request(env)
        if (
            req.method in ("POST", "PUT")
            and self._is_account(req)
            and (KEY in req.headers or REMOVE in req.headers)
            and env.get("reseller_request") is not True
        ):
            return HTTPForbidden(
                body=b"only a reseller admin enables or disables storlets on an account\n",
                request=req,
            )(env, start_response)
        return self.app(env, start_response)

    @staticmethod
    def _is_account(req):
        try:
            _version, _account, container = split_path(req.path_info, 2, 3, True)
        except ValueError:
            return False
        return not container


def filter_factory(global_conf, **local_conf):
    conf = dict(global_conf, **local_conf)

    def storlet_enable_filter(app):
        return StorletEnableMiddleware(app, conf)

    return storlet_enable_filter
