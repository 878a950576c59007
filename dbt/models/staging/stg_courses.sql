select
    id as course_id,
    name as course_name,
    course_code,
    account_id,
    enrollment_term_id,
    workflow_state,
    coalesce(workflow_state = 'deleted', false) as is_deleted,
    start_at,
    conclude_at,
    created_at
from {{ source('canvas', 'courses') }}
