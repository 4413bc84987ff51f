variable "organization" {
  description = "This organization's name: the server operator (e.g. fedkit) or a hospital (cleveland, hungarian, switzerland, va)."
  type        = string
}

variable "role" {
  description = "\"server\" for the organization that runs the FLARE server, \"site\" for a hospital."
  type        = string
  validation {
    condition     = contains(["server", "site"], var.role)
    error_message = "role must be \"server\" or \"site\"."
  }
}

variable "region" {
  description = "AWS region of this organization's cluster."
  type        = string
  default     = "eu-west-1"
}

variable "availability_zones" {
  description = "Two or more Availability Zones of the region, named explicitly so the network never changes by itself."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b"]
}

variable "vpc_cidr" {
  description = "CIDR of the new VPC (must not overlap the organization's networks it peers with)."
  type        = string
  default     = "10.40.0.0/16"
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.31"
}

variable "admin_cidrs" {
  description = "Networks allowed to reach the private EKS API endpoint (e.g. the organization's VPN)."
  type        = list(string)
  default     = []
}

variable "server_dns_name" {
  description = "Server organization: the DNS name in deploy/project.yml (the server certificate's name)."
  type        = string
  default     = "fedkit-server.example.org"
}

variable "data_bucket" {
  description = "Hospital: name of its own S3 bucket holding the data (empty: data comes from a volume instead)."
  type        = string
  default     = ""
}

variable "node_instance_type" {
  description = "Instance type of the managed node group (CPU only: logistic regression and small MLPs)."
  type        = string
  default     = "m6i.large"
}
