"""Panel forms, one module per page group (as panel/views/): they only parse input and show
refusals; every rule is the domain's (an app's rules.py or its services) and every write goes
through a service.

Field names follow the admin API's (amount, budget_limit, overdraft_limit…), so the field
errors services raise land next to the field they are about."""
