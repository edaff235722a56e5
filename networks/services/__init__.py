"""Business rules: validate, write rows, audit, request Operations."""
