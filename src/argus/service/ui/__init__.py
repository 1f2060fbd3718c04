"""The web console at `/ui`: server-rendered pages (Jinja2) with htmx for the live parts.

Owns nothing by itself; `argus.service.ui.app.install` mounts the console on the app. The pages
call the same services as the API (`app.state.tasks`, `.nodes`, `.users`, `.usage`) with the
caller's `Identity`, so they follow exactly the API's visibility rules, and add no capability of
their own. Sessions and CSRF are `argus.service.ui.sessions`; rendering, the security headers
and the login guard are `argus.service.ui.web`.
"""
