resource "aws_iam_role" "app" {
  name               = "app"
  assume_role_policy = "{}"
}
