organization = "va"
role         = "site"
vpc_cidr     = "10.44.0.0/16"
data_bucket  = "va-fedkit-data"
admin_cidrs  = ["192.0.2.0/24"]
