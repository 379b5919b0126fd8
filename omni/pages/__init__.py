"""The pages (DESIGN §9): the visitor's WebChat, the embed script, their assets and the public
configuration they read, served by the HTTP app beside the admin API (docs/pages.md).

An edge: it may read the domain, the settings and the live configuration of the hub it is
given; it never imports the gateway or the admin API. The composition root (``omni.server``)
installs it on the app (:func:`install_pages`).
"""

from omni.pages.site import Pages, PublicUrls, install_pages

__all__ = ["Pages", "PublicUrls", "install_pages"]
