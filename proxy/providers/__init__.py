"""One module per provider; the registry (``ProviderConfig``, ``build_adapter``) is
``proxy.providers.registry``.

Imports nothing: importing one adapter, or ``proxy.providers.base``, must not import
every other adapter (that once closed an import cycle through ``proxy.upstream``).
"""
