"""Laku: group-buying (grosir) commerce platform."""
