"""Give the storlet ACL code the user name under tempauth.

The storlet middleware checks storlet ACLs against keystone's
``X-User-Name``.  tempauth does not set it; this filter, placed right after
tempauth, sets ``HTTP_X_USER_NAME`` from the authenticated ``REMOTE_USER``
and always overwrites what a client sent, so the header cannot be forged.
It sets ``HTTP_X_TENANT_NAME`` (the account) with it, as keystone would:
s3api reads the two together.
"""


class UserNameMiddleware(object):

    def __init__(self, app, conf):
        self.app = app

    def __call__(self, env, start_response):
        env.pop('HTTP_X_USER_NAME', None)
        env.pop('HTTP_X_TENANT_NAME', None)
        remote_user = env.get('REMOTE_USER')
        if remote_user:
            # tempauth's groups: "account,account:user,AUTH_account"
            qualified = [g for g in remote_user.split(',') if ':' in g]
            if qualified:
                account, user = qualified[0].split(':', 1)
                env['HTTP_X_TENANT_NAME'] = account
                env['HTTP_X_USER_NAME'] = user
        return self.app(env, start_response)


def filter_factory(global_conf, **local_conf):
    conf = dict(global_conf, **local_conf)

    def user_name_filter(app):
        return UserNameMiddleware(app, conf)
    return user_name_filter
