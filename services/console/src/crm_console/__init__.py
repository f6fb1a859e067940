"""The browser console: server-rendered screens over the gateway's public API."""
